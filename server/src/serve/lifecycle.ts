/**
 * The server's lifecycle steps apart from its composition (server.ts): binding a gRPC server, and
 * the drain on shutdown — health NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within
 * the grace period, then the servers, fine-tune jobs, models, store and metrics close, in that order.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { CallGate } from '../grpc/call-context';
import type { RunningHttpApi } from '../http';
import type { FineTuneSubsystem } from './finetune';

/** What a running server holds that the drain stops. */
export interface ServingParts {
  gate: CallGate;
  setHealth(status: 'SERVING' | 'NOT_SERVING'): void;
  logger: Logger;
  server: grpc.Server;
  healthServer: grpc.Server | undefined;
  httpApi: RunningHttpApi | undefined;
  apiKeys: { close(): void } | undefined;
  finetune: FineTuneSubsystem | undefined;
  host: { readonly ready: boolean; close(): Promise<void> };
  /** Settles when the first model is loaded (or failed to). */
  ready: Promise<void>;
  metricsServer: { close(): Promise<void> };
}

/** Drains within `graceSeconds`, then stops everything; see the file comment for the order. */
export async function drainAndStop(p: ServingParts, graceSeconds: number): Promise<void> {
  const { gate, logger } = p;
  const wasServing = gate.phase === 'serving';
  gate.setPhase('draining');
  p.setHealth('NOT_SERVING');
  const graceMs = Math.max(0, graceSeconds * 1000);
  const deadline = Date.now() + graceMs;
  logger.info({ inFlightCalls: gate.inFlight, graceSeconds }, 'draining: refusing new calls, finishing in-flight ones');
  const drained = await within(gate.whenIdle(), graceMs);
  if (!drained)
    logger.warn({ inFlightCalls: gate.inFlight }, 'grace period over: cancelling the calls still in flight');
  await stopServer(p.server, drained ? Math.max(0, deadline - Date.now()) : 0);
  if (p.healthServer) await stopServer(p.healthServer, 0);
  // Drained: only idle keep-alive connections are left; past the grace, requests are cut too.
  await p.httpApi?.close(!drained).catch((err: unknown) => logger.error({ err }, 'closing the http api failed'));
  gate.setPhase('stopped');
  p.apiKeys?.close();
  // A running fine-tune job stops here and keeps its state: the next start resumes it.
  await p.finetune?.close().catch((err: unknown) => logger.error({ err }, 'stopping fine-tune jobs failed'));
  if (p.host.ready) await p.host.close().catch((err: unknown) => logger.error({ err }, 'closing the model failed'));
  else if (!wasServing) await p.ready.catch(() => undefined);
  await p.finetune?.store.close().catch((err: unknown) => logger.error({ err }, 'closing the store failed'));
  // Last: Prometheus and the kubelet keep seeing the drain until the very end.
  await p.metricsServer.close();
  logger.info('server stopped');
}

export function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, creds, (err, port) =>
      err ? reject(new Error(`cannot listen on ${address}: ${err.message}`)) : resolve(port),
    ),
  );
}

/** tryShutdown within `ms`, then forceShutdown (which cancels whatever is left). */
function stopServer(server: grpc.Server, ms: number): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      server.forceShutdown();
      finish();
    }, ms);
    server.tryShutdown(() => finish());
  });
}

/** True if `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
