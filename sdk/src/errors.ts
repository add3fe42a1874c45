/**
 * The one error type the SDK throws: every failure — a gRPC status from the server, a deadline, an
 * abort, invalid input caught before sending — is a ClipServeError carrying a gRPC status code,
 * so callers branch on `err.code` alone.
 */
import * as grpc from '@grpc/grpc-js';

export const Status = grpc.status;
export type StatusCode = grpc.status;

export interface ClipServeErrorInit {
  code: grpc.status;
  /** Developer-facing description (the server's status details for remote errors). */
  details: string;
  /** Index into the caller's input list of the item that caused the failure, when known. */
  itemIndex?: number;
  /** Response trailers of the failed call, when it reached the server. */
  metadata?: grpc.Metadata;
  cause?: unknown;
}

export class ClipServeError extends Error {
  override readonly name = 'ClipServeError';
  readonly code: grpc.status;
  /** Name of the code, e.g. "UNAVAILABLE". */
  readonly codeName: string;
  readonly details: string;
  readonly itemIndex: number | undefined;
  readonly metadata: grpc.Metadata | undefined;

  constructor(init: ClipServeErrorInit) {
    const codeName = grpc.status[init.code] ?? `CODE_${init.code}`;
    const where = init.itemIndex === undefined ? '' : ` (item ${init.itemIndex})`;
    super(`${codeName}: ${init.details}${where}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = init.code;
    this.codeName = codeName;
    this.details = init.details;
    this.itemIndex = init.itemIndex;
    this.metadata = init.metadata;
  }

  /** Whether retrying the same call later may succeed. */
  get retryable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.RESOURCE_EXHAUSTED;
  }
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number' && 'details' in err;
}

/**
 * The server names a failing item in its status message as `<field>[<index>]: <reason>` (e.g.
 * "images[3]: unsupported image format"). Returns the index in the request's list, if present.
 */
export function requestItemIndex(details: string): number | undefined {
  const m = /^\s*[A-Za-z_]+\[(\d+)\]/.exec(details);
  return m ? Number(m[1]) : undefined;
}

/**
 * Wraps anything thrown by a call. `toInputIndex` maps an index in the failing request's item list
 * back to the caller's input list (requests are slices of it).
 */
export function toClipServeError(
  err: unknown,
  toInputIndex?: (requestIndex: number) => number | undefined,
): ClipServeError {
  if (err instanceof ClipServeError) return err;
  if (isServiceError(err)) {
    const local = requestItemIndex(err.details);
    return new ClipServeError({
      code: err.code,
      details: err.details,
      itemIndex: local === undefined ? undefined : toInputIndex ? toInputIndex(local) : local,
      metadata: err.metadata,
      cause: err,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ClipServeError({ code: grpc.status.UNKNOWN, details: message, cause: err });
}

export function invalidArgument(details: string, itemIndex?: number): ClipServeError {
  return new ClipServeError({ code: grpc.status.INVALID_ARGUMENT, details, itemIndex });
}
