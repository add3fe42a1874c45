/**
 * The server's listening steps, in order: the gRPC port, the plaintext health port, the HTTP API
 * and the metrics/probe port. A step that fails (a port in use, a bad certificate) releases what
 * the start opened before it, so an embedder of startServer may go on running.
 */
import * as grpc from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import { AUTHORIZATION_KEY, type ApiKeySource } from '../auth';
import { exposeRepeatedHeaders } from '../auth/repeated-headers';
import type { CallGate } from '../grpc/call-context';
import type { RequestLimits } from '../grpc/validate';
import { startHttpApi, type RunningHttpApi } from '../http';
import type { ModelHost } from '../inference/model-host';
import { startMetricsServer, type ClipserveMetrics } from '../metrics';
import type { LoadedModel } from '../runtime/model';
import { createTlsServerCredentials } from '../tls';
import type { ServeConfig } from './config';
import type { FineTuneSubsystem } from './finetune';
import { bind, hostPort } from './lifecycle';

/** What the start has opened so far: what a failed start closes again. */
export class OpenedParts {
  healthServer: grpc.Server | undefined;
  httpApi: RunningHttpApi | undefined;
  finetune: FineTuneSubsystem | undefined;

  constructor(
    readonly server: grpc.Server,
    readonly apiKeys: ApiKeySource | undefined,
  ) {}

  /** Closes everything opened, then rethrows `err`. */
  readonly abandon = async (err: unknown): Promise<never> => {
    this.server.forceShutdown();
    this.healthServer?.forceShutdown();
    await this.httpApi?.close(true).catch(() => undefined);
    this.apiKeys?.close();
    if (this.finetune) {
      await this.finetune.close().catch(() => undefined);
      await this.finetune.store.close().catch(() => undefined);
    }
    throw err;
  };
}

export interface ListenDeps {
  config: ServeConfig;
  logger: Logger;
  metrics: ClipserveMetrics;
  health: HealthImplementation;
  host: ModelHost<LoadedModel>;
  servingSince: () => number;
  limits: RequestLimits;
  gate: CallGate;
}

export interface BoundPorts {
  port: number;
  healthPort: number | undefined;
  httpPort: number | undefined;
  metricsServer: { readonly port: number; close(): Promise<void> };
}

/** Binds every configured listener, in the order of the file comment. */
export async function listen(parts: OpenedParts, d: ListenDeps): Promise<BoundPorts> {
  const port = await listenGrpc(parts, d).catch(parts.abandon);
  const healthPort = await listenHealth(parts, d).catch(parts.abandon);
  const httpPort = await listenHttpApi(parts, d).catch(parts.abandon);
  const metricsServer = await startMetricsServer({
    metrics: d.metrics,
    port: d.config.metricsPort,
    host: d.config.host,
  }).catch(parts.abandon);
  d.logger.info({ port: metricsServer.port }, 'metrics and probes listening (/metrics, /healthz, /readyz)');
  return { port, healthPort, httpPort, metricsServer };
}

async function listenGrpc(parts: OpenedParts, { config, logger, metrics }: ListenDeps): Promise<number> {
  const port = await bind(parts.server, hostPort(config.host, config.port), serverCredentials(config, logger, metrics));
  logger.info(
    { host: config.host, port, tls: config.tlsCert !== undefined, mtls: config.tlsClientCa !== undefined },
    'grpc server listening',
  );
  if (parts.apiKeys && !exposeRepeatedHeaders(parts.server, [AUTHORIZATION_KEY]))
    logger.warn(
      'this grpc-js hides its HTTP/2 servers: a repeated authorization header is seen as its first value only',
    );
  return port;
}

async function listenHealth(parts: OpenedParts, { config, logger, health }: ListenDeps): Promise<number | undefined> {
  if (config.healthPort === undefined) return undefined;
  parts.healthServer = new grpc.Server();
  health.addToServer(parts.healthServer);
  const port = await bind(
    parts.healthServer,
    hostPort(config.host, config.healthPort),
    grpc.ServerCredentials.createInsecure(),
  );
  logger.info({ port }, 'plaintext health server listening');
  return port;
}

async function listenHttpApi(
  parts: OpenedParts,
  { config, logger, metrics, host, servingSince, limits, gate }: ListenDeps,
): Promise<number | undefined> {
  if (config.httpPort === 0) return undefined;
  const apiKeys = parts.apiKeys;
  parts.httpApi = await startHttpApi(
    {
      models: host,
      servedModels: () =>
        host.loadedVersions().map((v) => ({ info: v.info, since: v.active ? servingSince() : v.lastUsedMs })),
      limits,
      gate,
      logger,
      auth: apiKeys ? { keys: () => apiKeys.store, openDocs: config.authOpenReflection } : undefined,
      metrics: metrics.http,
    },
    {
      host: config.host,
      port: config.httpPort === 'auto' ? 0 : config.httpPort,
      bodyLimit: config.maxMessageBytes,
      tls:
        config.tlsCert !== undefined && config.tlsKey !== undefined
          ? {
              certFile: config.tlsCert,
              keyFile: config.tlsKey,
              clientCaFile: config.tlsClientCa,
              reloadIntervalMs: config.credentialsReloadSeconds * 1000,
            }
          : undefined,
    },
  );
  logger.info(
    { host: config.host, port: parts.httpApi.port, tls: config.tlsCert !== undefined },
    'http api listening (OpenAI-compatible /v1/embeddings)',
  );
  return parts.httpApi.port;
}

/** TLS (mutual with a client CA) from files that are re-read every credentialsReloadSeconds. */
function serverCredentials(config: ServeConfig, logger: Logger, metrics: ClipserveMetrics): grpc.ServerCredentials {
  if (config.tlsCert === undefined || config.tlsKey === undefined) return grpc.ServerCredentials.createInsecure();
  return createTlsServerCredentials({
    certFile: config.tlsCert,
    keyFile: config.tlsKey,
    clientCaFile: config.tlsClientCa,
    reloadIntervalMs: config.credentialsReloadSeconds * 1000,
    logger,
    observer: metrics.credentials.observer('tls'),
  });
}
