/**
 * HTTP API failures in OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`,
 * with OpenAI's status codes. Failures of the shared serving path (queue full, bad image, shutdown,
 * a pinned version that is not served) go through the gRPC error map first (grpc/status.ts
 * toStatus), so both protocols agree on what each failure is; this file only translates the code.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { ItemFailure, toStatus } from '../grpc/status';
import { ImageError } from '../preprocess/errors';

/** OpenAI's `error.type` values (the SDKs pick their exception class by status code, not type). */
export type ErrorType = 'invalid_request_error' | 'requests' | 'server_error';

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

/** A failure with a chosen HTTP status; `param` names the request field at fault. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** 400: the request itself is wrong. */
  static invalid(message: string, param: string | null, code = 'invalid_value'): ApiError {
    return new ApiError(400, message, code, param);
  }
}

/** What the error handler sends for a failure. */
export interface MappedHttpError {
  status: number;
  body: ErrorBody;
  /** A server fault worth an error log (not the client's doing). */
  internal: boolean;
  /** Seconds a client should wait before retrying (429, 503). */
  retryAfter?: number;
}

export function errorBody(
  status: number,
  message: string,
  code: string | null,
  param: string | null = null,
): ErrorBody {
  return { error: { message, type: errorType(status), param, code } };
}

function errorType(status: number): ErrorType {
  if (status === 429) return 'requests';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

/** gRPC code of the shared error map → HTTP status and OpenAI-style code. */
const FROM_GRPC: Partial<Record<GrpcStatus, { status: number; code: string }>> = {
  [GrpcStatus.INVALID_ARGUMENT]: { status: 400, code: 'invalid_value' },
  [GrpcStatus.OUT_OF_RANGE]: { status: 400, code: 'invalid_value' },
  [GrpcStatus.FAILED_PRECONDITION]: { status: 400, code: 'failed_precondition' },
  [GrpcStatus.NOT_FOUND]: { status: 404, code: 'not_found' },
  [GrpcStatus.UNAUTHENTICATED]: { status: 401, code: 'invalid_api_key' },
  [GrpcStatus.PERMISSION_DENIED]: { status: 403, code: 'insufficient_permissions' },
  [GrpcStatus.RESOURCE_EXHAUSTED]: { status: 429, code: 'rate_limit_exceeded' },
  [GrpcStatus.UNAVAILABLE]: { status: 503, code: 'service_unavailable' },
  [GrpcStatus.DEADLINE_EXCEEDED]: { status: 504, code: 'timeout' },
  // nginx's "client closed request": nobody reads it, but logs and metrics tell it from a fault.
  [GrpcStatus.CANCELLED]: { status: 499, code: 'cancelled' },
};

/** Maps any failure of a request to its response. */
export function toHttpError(err: unknown): MappedHttpError {
  if (err instanceof ApiError)
    return {
      status: err.status,
      body: errorBody(err.status, err.message, err.code, err.param),
      internal: false,
      ...retry(err.status),
    };
  const image = err instanceof ItemFailure && err.failure instanceof ImageError ? err.failure : undefined;
  const st = toStatus(err);
  const param = err instanceof ItemFailure ? err.item : null;
  // An image over --max-image-bytes / --max-image-pixels is a payload too large, as a body is.
  if (image && (image.code === 'TOO_LARGE' || image.code === 'TOO_MANY_PIXELS')) {
    return { status: 413, body: errorBody(413, st.details, 'image_too_large', param), internal: false };
  }
  const mapped = FROM_GRPC[st.code] ?? { status: 500, code: 'internal_error' };
  return {
    status: mapped.status,
    body: errorBody(mapped.status, st.details, mapped.code, param),
    internal: st.internal,
    ...retry(mapped.status),
  };
}

/** Overload and shutdown are worth a retry: say when (the OpenAI SDKs honour Retry-After). */
function retry(status: number): { retryAfter?: number } {
  return status === 429 || status === 503 ? { retryAfter: 1 } : {};
}
