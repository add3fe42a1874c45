/**
 * What every handler gets per call (abort signal, deadline, request id, logger) and the gate that
 * admits calls only while the server is serving, counting them so a drain knows when in-flight
 * work is done.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { SubmitOptions } from '../batching';
import { keyNameOf } from '../auth/call-identity';
import { offeredRequestId } from '../metrics/grpc-server-metrics';
import { RpcError, toStatus } from './status';

export type ServingPhase = 'starting' | 'serving' | 'draining' | 'stopped';

/** Admits calls by phase and counts the ones in flight. */
export class CallGate {
  private phaseNow: ServingPhase = 'starting';
  private active = 0;
  private idleWaiters: (() => void)[] = [];

  get phase(): ServingPhase {
    return this.phaseNow;
  }

  get inFlight(): number {
    return this.active;
  }

  setPhase(phase: ServingPhase): void {
    this.phaseNow = phase;
  }

  /** Throws UNAVAILABLE unless serving; otherwise counts the call until `exit()`. */
  enter(): void {
    if (this.phaseNow === 'starting')
      throw new RpcError(grpc.status.UNAVAILABLE, 'server is starting: the model is still loading');
    if (this.phaseNow !== 'serving') throw new RpcError(grpc.status.UNAVAILABLE, 'server is shutting down');
    this.active++;
  }

  exit(): void {
    this.active--;
    if (this.active === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no admitted call is in flight. */
  whenIdle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

export interface CallContext extends Required<Pick<SubmitOptions, 'signal'>> {
  /** Epoch milliseconds, or undefined for no deadline. */
  deadline: number | undefined;
  requestId: string;
  log: Logger;
  /** Aborts `signal`: the call has failed, so whatever of it is still queued is dropped. */
  cancel(): void;
  /** The call has sent its status: the transport's close that follows is not a cancellation. */
  settle(): void;
  /** The API key the call was admitted with ('' without keys): whose datasets it sees. */
  keyName: string;
  /** Who the call counts against in the batchers' fair scheduling and per-caller queue share. */
  callerKey: string;
}

/**
 * The batchers' caller identity: the API key's name when keys are on, else the peer's address
 * without its port (one client opening many connections is still one caller). Never a metric label.
 */
export function callerKeyOf(keyName: string, peerAddress: string): string {
  return keyName ? `key:${keyName}` : `peer:${peerAddress.replace(/:\d+$/, '')}`;
}

type AnyServerCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>;

/** Builds the context of a call: aborts its signal when the client cancels or the deadline hits. */
export function callContext(call: AnyServerCall, method: string, logger: Logger): CallContext {
  // The metrics interceptor, when installed, has already put an acceptable id in the metadata.
  const requestId = offeredRequestId(call.metadata) ?? randomUUID();
  const controller = new AbortController();
  // Every queued item of the call listens for its cancellation (a stream has up to its window of
  // them at once): many listeners here are by design, not a leak.
  setMaxListeners(0, controller.signal);
  // grpc-js emits 'cancelled' when the HTTP/2 stream closes, after a status too. Aborting then
  // would cost every call a DOMException and its listeners' work for nothing.
  let settled = false;
  call.once('cancelled', () => {
    if (!settled) controller.abort();
  });
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return {
    signal: controller.signal,
    deadline: Number.isFinite(ms) ? ms : undefined,
    requestId,
    log: logger.child({ requestId, method }),
    cancel: () => controller.abort(),
    settle: () => {
      settled = true;
    },
    keyName: keyNameOf(call.metadata),
    callerKey: callerKeyOf(keyNameOf(call.metadata), safePeer(call)),
  };
}

/** grpc-js throws from getPeer() once the stream is gone; such a call is anonymous. */
export function safePeer(call: { getPeer(): string }): string {
  try {
    return call.getPeer();
  } catch {
    return 'unknown';
  }
}

/**
 * Wraps a promise-returning unary handler: admission through the gate, context, error → status
 * mapping, and a log line per failure (never payloads).
 */
export function unaryHandler<Req, Res>(
  method: string,
  gate: CallGate,
  logger: Logger,
  fn: (request: Req, ctx: CallContext) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const ctx = callContext(call as grpc.ServerUnaryCall<unknown, unknown>, method, logger);
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      callback({ code: st.code, details: st.details });
      return;
    }
    const started = process.hrtime.bigint();
    fn(call.request, ctx)
      .then(
        (res) => {
          ctx.settle();
          callback(null, res);
          ctx.log.debug({ code: 'OK', ms: elapsedMs(started) }, 'call done');
        },
        (err: unknown) => {
          const st = toStatus(err);
          ctx.settle();
          callback({ code: st.code, details: st.details });
          if (st.internal) ctx.log.error({ err, code: grpc.status[st.code] }, 'call failed');
          else
            ctx.log.debug({ code: grpc.status[st.code], details: st.details, ms: elapsedMs(started) }, 'call rejected');
        },
      )
      .finally(() => gate.exit());
  };
}

export function elapsedMs(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e6;
}
