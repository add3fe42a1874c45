/**
 * Maps every failure the serving path can produce to a gRPC status, in one place, so unary calls
 * and per-item stream errors agree: bad input → INVALID_ARGUMENT naming the item, full queue →
 * RESOURCE_EXHAUSTED, shutdown → UNAVAILABLE, deadline/cancel → their codes, anything unexpected →
 * INTERNAL without leaking internals to the client.
 */
import { status as Status } from '@grpc/grpc-js';
import { BatcherClosedError, CancelledError, DeadlineExceededError, InferenceError, QueueFullError } from '../batching';
import { ModelActivationError, ModelBudgetError } from '../inference/model-host';
import { ModelNotFoundError } from '../versions/registry';
import { ImageError } from '../preprocess/errors';
import { echo } from '../util/echo';

/** A failure with a chosen gRPC code and a client-facing message. */
export class RpcError extends Error {
  constructor(
    readonly code: Status,
    message: string,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** A failure of one named item of a request (e.g. "images[3]"). */
export class ItemFailure extends Error {
  constructor(
    readonly item: string,
    readonly failure: unknown,
  ) {
    super(`${item}: ${failure instanceof Error ? failure.message : String(failure)}`);
    this.name = 'ItemFailure';
  }
}

export const invalidArgument = (message: string): RpcError => new RpcError(Status.INVALID_ARGUMENT, message);

export interface MappedStatus {
  code: Status;
  details: string;
  /** True when the cause is a server fault worth an error log (not the client's doing). */
  internal: boolean;
}

/**
 * The status for `err`. `item` names the input it concerns ("images[3]", "item \"abc\"") and
 * prefixes the message of input-specific errors.
 */
export function toStatus(err: unknown, item?: string): MappedStatus {
  const st = mapStatus(err, item);
  // Messages may repeat what the caller sent (an id, a path): never let that make the trailer huge.
  return st.details.length > MAX_DETAILS_CHARS ? { ...st, details: echo(st.details, MAX_DETAILS_CHARS) } : st;
}

/** Longest status message sent (characters); longer ones are cut. */
export const MAX_DETAILS_CHARS = 1000;

function mapStatus(err: unknown, item?: string): MappedStatus {
  if (err instanceof ItemFailure) return mapStatus(err.failure, err.item);
  const prefix = item ? `${item}: ` : '';
  if (err instanceof RpcError) return { code: err.code, details: err.message, internal: false };
  if (err instanceof ModelNotFoundError) return { code: Status.NOT_FOUND, details: err.message, internal: false };
  if (err instanceof ModelActivationError)
    return { code: Status.FAILED_PRECONDITION, details: err.message, internal: false };
  if (err instanceof ModelBudgetError)
    return { code: Status.RESOURCE_EXHAUSTED, details: err.message, internal: false };
  if (err instanceof ImageError)
    return { code: Status.INVALID_ARGUMENT, details: `${prefix}${err.message}`, internal: false };
  if (err instanceof QueueFullError) {
    return {
      code: Status.RESOURCE_EXHAUSTED,
      details: `server overloaded: ${err.message}; retry with backoff`,
      internal: false,
    };
  }
  if (err instanceof DeadlineExceededError)
    return { code: Status.DEADLINE_EXCEEDED, details: err.message, internal: false };
  if (err instanceof CancelledError) return { code: Status.CANCELLED, details: err.message, internal: false };
  if (err instanceof BatcherClosedError)
    return { code: Status.UNAVAILABLE, details: 'server is shutting down', internal: false };
  if (err instanceof InferenceError)
    return { code: Status.INTERNAL, details: `${err.modality} inference failed`, internal: true };
  return { code: Status.INTERNAL, details: 'internal error', internal: true };
}
