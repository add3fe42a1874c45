/**
 * One HTTP API request as a call of the shared serving path: admitted through the same CallGate as
 * gRPC calls (so a drain waits for HTTP requests too, and a starting or draining server answers
 * 503), with a CallContext whose signal aborts when the client goes away, so its queued items are
 * dropped instead of embedded for nobody.
 */
import { setMaxListeners } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { callerKeyOf, type CallContext, type CallGate } from '../grpc/call-context';
import { httpKeyNameOf } from './auth';

export async function withCall<T>(
  gate: CallGate,
  logger: Logger,
  request: FastifyRequest,
  reply: FastifyReply,
  fn: (ctx: CallContext) => Promise<T>,
): Promise<T> {
  gate.enter();
  const controller = new AbortController();
  // Every queued item listens for the cancellation: many listeners here are by design.
  setMaxListeners(0, controller.signal);
  let settled = false;
  const onClose = () => {
    if (!settled) controller.abort();
  };
  reply.raw.once('close', onClose);
  const ctx: CallContext = {
    signal: controller.signal,
    // HTTP has no deadline header; a client that gives up closes the connection (signal above).
    deadline: undefined,
    requestId: String(request.id),
    log: logger.child({ requestId: request.id, route: request.routeOptions.url }),
    cancel: () => controller.abort(),
    settle: () => {
      settled = true;
    },
    // The key decides which datasets a call sees; the HTTP API only embeds and reads no datasets.
    keyName: '',
    callerKey: callerKeyOf(httpKeyNameOf(request), request.ip),
  };
  try {
    return await fn(ctx);
  } finally {
    ctx.settle();
    reply.raw.off('close', onClose);
    gate.exit();
  }
}
