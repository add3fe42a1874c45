/** Deadlines and cancellation for one gRPC call. */
import * as grpc from '@grpc/grpc-js';
import { ClipServeError, Status, toClipServeError } from './errors.js';
import type { CallOptions } from './types.js';

/** The effective deadline: the earlier of `deadline` and now + `timeoutMs`, else now + the default. */
export function resolveDeadline(opts: CallOptions | undefined, defaultTimeoutMs: number | undefined): Date | undefined {
  const candidates: number[] = [];
  if (opts?.deadline !== undefined) {
    if (!(opts.deadline instanceof Date) || Number.isNaN(opts.deadline.getTime()))
      throw new TypeError('deadline must be a valid Date');
    candidates.push(opts.deadline.getTime());
  }
  if (opts?.timeoutMs !== undefined) {
    if (!(opts.timeoutMs >= 0)) throw new RangeError('timeoutMs must be a number >= 0');
    candidates.push(Date.now() + opts.timeoutMs);
  }
  if (candidates.length === 0 && defaultTimeoutMs !== undefined && defaultTimeoutMs > 0)
    candidates.push(Date.now() + defaultTimeoutMs);
  return candidates.length ? new Date(Math.min(...candidates)) : undefined;
}

export function abortedError(signal: AbortSignal): ClipServeError {
  return new ClipServeError({
    code: Status.CANCELLED,
    details: 'the call was aborted by the caller',
    cause: signal.reason,
  });
}

/** Cancels `call` when `signal` aborts; returns the function that detaches the listener. */
export function linkAbort(signal: AbortSignal | undefined, call: { cancel(): void }): () => void {
  if (!signal) return () => {};
  const onAbort = (): void => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * One unary call with a deadline and an abort signal. Failures come back as ClipServeError; a
 * call cancelled through the signal rejects with code CANCELLED and the signal's reason as cause.
 */
export function unaryCall<Req, Res>(
  client: grpc.Client,
  method: string,
  request: Req,
  metadata: grpc.Metadata,
  deadline: Date | undefined,
  signal: AbortSignal | undefined,
  toInputIndex?: (requestIndex: number) => number | undefined,
): Promise<Res> {
  if (signal?.aborted) return Promise.reject(abortedError(signal));
  const fn = (client as unknown as Record<string, UnaryMethod<Req, Res>>)[method];
  if (typeof fn !== 'function')
    return Promise.reject(
      new ClipServeError({ code: Status.UNIMPLEMENTED, details: `the bundled proto has no method ${method}` }),
    );
  return new Promise<Res>((resolve, reject) => {
    let detach = (): void => {};
    const call = fn.call(client, request, metadata, deadline ? { deadline } : {}, (err, response) => {
      detach();
      if (err) {
        reject(
          signal?.aborted && err.code === Status.CANCELLED ? abortedError(signal) : toClipServeError(err, toInputIndex),
        );
      } else if (response === undefined) {
        reject(new ClipServeError({ code: Status.INTERNAL, details: `${method} returned no response` }));
      } else {
        resolve(response);
      }
    });
    detach = linkAbort(signal, call);
  });
}
