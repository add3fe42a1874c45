/**
 * startServer: the gRPC embedding server. It binds first and reports NOT_SERVING (health) and
 * UNAVAILABLE (API) while the model loads and warms up, then serves. shutdown() drains: health
 * NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within the grace period, then the
 * servers, batchers and model are closed.
 */
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import { ApiKeySource, AuthPolicy, AUTHORIZATION_KEY, createAuthInterceptor } from '../auth';
import { exposeRepeatedHeaders } from '../auth/repeated-headers';
import type { BatcherObserver, BatcherStats } from '../batching';
import { CallGate, ServingPhase } from '../grpc/call-context';
import { callerAdmission } from './caller-admission';
import { disabledServiceHandlers } from '../grpc/disabled-service';
import { StreamStats } from '../grpc/embed-stream';
import { embeddingServiceHandlers } from '../grpc/embedding-service';
import { EMBEDDING_SERVICE_NAME, loadProtos } from '../grpc/proto';
import type { RequestLimits } from '../grpc/validate';
import { startHttpApi, type RunningHttpApi } from '../http';
import { ClipserveMetrics, startMetricsServer } from '../metrics';
import { createTlsServerCredentials } from '../tls';
import type { LoadedModel } from '../runtime/model';
import { resolveServeConfig, ServeConfig } from './config';
import { openFineTune, type FineTuneSubsystem } from './finetune';
import { bind, drainAndStop, hostPort } from './lifecycle';
import { createLogger } from './logger';
import { createModelHost } from './served-versions';
import { loadServedModel, ModelLoader } from './model-loader';

export interface StartOptions {
  /** grpc-js server interceptors (metrics, request logs, auth), outermost first. */
  interceptors?: grpc.ServerInterceptor[];
  /** Batcher metrics hook (default: the server's own Prometheus service metrics). */
  observer?: BatcherObserver;
  /** Defaults to a JSON logger on stdout at config.logLevel. */
  logger?: Logger;
  /**
   * true (default): resolve once the model is loaded, warmed and SERVING. false: resolve as soon
   * as the ports are bound (NOT_SERVING); `ready` settles later.
   */
  waitUntilReady?: boolean;
  /** Replaces the model loader (the default resolves config.model / the demo bundle). */
  loadModel?: ModelLoader;
}

/** Configuration (every ServeConfig field optional, defaults applied) plus start options. */
export type StartServerConfig = Partial<Record<keyof ServeConfig, unknown>> & StartOptions;

export interface ServerStats {
  phase: ServingPhase;
  inFlightCalls: number;
  /** Per modality: inference runs so far, queue depth, items running. */
  batchers: { text: BatcherStats; image: BatcherStats } | undefined;
  streams: StreamStats;
}

export interface RunningServer {
  /** The bound gRPC port (useful with port 0). */
  readonly port: number;
  /** The bound health-only port, when configured. */
  readonly healthPort: number | undefined;
  /** The bound port of the OpenAI-compatible HTTP API (useful with httpPort "auto"); undefined when off (0). */
  readonly httpPort: number | undefined;
  /** The bound HTTP port of /metrics, /healthz and /readyz (useful with metricsPort 0). */
  readonly metricsPort: number;
  /** The Prometheus registry and metric families this server exports. */
  readonly metrics: ClipserveMetrics;
  readonly config: ServeConfig;
  readonly logger: Logger;
  /** The served model; throws while it is still loading. */
  readonly model: LoadedModel;
  /** Settles when the model is loaded and warm (rejects if loading failed). */
  readonly ready: Promise<void>;
  /** Model loaded and warm, and not draining: what readiness probes report. */
  isReady(): boolean;
  phase(): ServingPhase;
  stats(): ServerStats;
  /** Drains and stops; `graceSeconds` defaults to config.shutdownGraceSeconds. Idempotent. */
  shutdown(graceSeconds?: number): Promise<void>;
}

const START_OPTION_KEYS: readonly (keyof StartOptions)[] = ['interceptors', 'observer', 'logger', 'waitUntilReady', 'loadModel'];
/** Health is reported for the whole server ("") and per service. */
const HEALTH_SERVICES = ['', EMBEDDING_SERVICE_NAME];

export async function startServer(input: StartServerConfig = {}): Promise<RunningServer> {
  const configInput: Record<string, unknown> = { ...input };
  for (const k of START_OPTION_KEYS) delete configInput[k];
  const config = resolveServeConfig(configInput);
  const logger = input.logger ?? createLogger(config.logLevel);
  const loader = input.loadModel ?? loadServedModel;

  const protos = loadProtos();
  const gate = new CallGate();
  const streamStats = new StreamStats();
  const health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING' as const])));
  const setHealth = (status: 'SERVING' | 'NOT_SERVING') => HEALTH_SERVICES.forEach((s) => health.setStatus(s, status));

  const limits: RequestLimits = {
    maxItemsPerRequest: config.maxItemsPerRequest,
    maxImageBytes: config.maxImageBytes,
    maxImagePixels: config.maxImagePixels,
    maxMessageBytes: config.maxMessageBytes,
    maxBatchSize: config.maxBatchSize,
    maxTextChars: config.maxTextChars,
  };

  // Metrics interceptor first: it must wrap the transport call to see the statuses grpc-js sends
  // by itself (deadline, oversized request), see GrpcServerMetrics.
  const metrics = new ClipserveMetrics({ logger });
  metrics.grpc.preRegister(protos.embeddingService);
  metrics.setReadinessProbe(() => ({ ready: gate.phase === 'serving', reason: gate.phase === 'serving' ? 'ok' : gate.phase }));
  for (const modality of ['text', 'image'] as const) metrics.service.setQueueCapacity(modality, config.queueBound);

  // The served versions (see served-versions.ts); the fine-tune subsystem, once open, knows the others.
  let finetune: FineTuneSubsystem | undefined;
  const { host, servingSince } = createModelHost({ config, loader, logger, metrics, observer: input.observer, registry: () => finetune?.registry });

  // API keys after the metrics, so refused calls are counted and logged with their code.
  const apiKeys = apiKeySource(config, logger, metrics);
  const auth = apiKeys
    ? createAuthInterceptor({
        keys: () => apiKeys.store,
        refusal: () => apiKeys.refusal,
        policy: new AuthPolicy({ openHealth: config.authOpenHealth, openReflection: config.authOpenReflection }),
        logger,
      })
    : undefined;
  if (apiKeys) logger.info({ keys: apiKeys.store.size, openHealth: config.authOpenHealth, openReflection: config.authOpenReflection }, 'API keys required');
  else logger.warn('no API keys configured: every caller may use every service (give --api-keys-file or CLIPSERVE_API_KEYS)');

  const server = new grpc.Server({
    interceptors: [metrics.grpc.interceptor, ...(auth ? [auth] : []), callerAdmission({ config, host, metrics, logger }), ...(input.interceptors ?? [])],
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': config.maxMessageBytes,
    // channelz stays on although no channelz service is exposed and its bookkeeping costs ~0.05 ms
    // of the event loop per call: grpc-js 1.14 tracks a server's HTTP/2 sessions only with it on,
    // and without them forceShutdown() cannot cancel the calls a drain leaves behind.
  });
  server.addService(
    protos.embeddingService,
    embeddingServiceHandlers({
      models: host,
      limits,
      gate,
      logger,
      // Enough read-ahead to fill the next batch while one runs, no more.
      streamWindow: Math.max(8, 2 * config.maxBatchSize),
      streamStats,
    }),
  );
  const dataDir = config.dataDir;
  let healthServer: grpc.Server | undefined;
  let httpApi: RunningHttpApi | undefined;
  // A start that fails after this point (a port in use, a bad certificate) releases what was
  // opened before it: an embedder of startServer may go on running.
  const abandonStart = async (err: unknown): Promise<never> => {
    server.forceShutdown();
    healthServer?.forceShutdown();
    await httpApi?.close(true).catch(() => undefined);
    apiKeys?.close();
    if (finetune) {
      await finetune.close().catch(() => undefined);
      await finetune.store.close().catch(() => undefined);
    }
    throw err;
  };
  try {
    finetune = dataDir !== undefined ? await openFineTune({ config: { ...config, dataDir }, logger, host, metrics, gate, protos, server }) : undefined;
  } catch (err) {
    return abandonStart(err);
  }
  if (!finetune) {
    // Reflection lists them: their calls say how to turn them on.
    const why = 'fine-tuning and the model registry need a data directory: start the server with --data-dir <dir> (or CLIPSERVE_DATA_DIR)';
    server.addService(protos.fineTuneService, disabledServiceHandlers(protos.fineTuneService, why));
    server.addService(protos.modelService, disabledServiceHandlers(protos.modelService, why));
  }
  health.addToServer(server);
  new ReflectionService(protos.packageDefinition).addToServer(server);

  const port = await Promise.resolve()
    .then(() => bind(server, hostPort(config.host, config.port), serverCredentials(config, logger, metrics)))
    .catch(abandonStart);
  logger.info({ host: config.host, port, tls: config.tlsCert !== undefined, mtls: config.tlsClientCa !== undefined }, 'grpc server listening');
  if (apiKeys && !exposeRepeatedHeaders(server, [AUTHORIZATION_KEY])) logger.warn('this grpc-js hides its HTTP/2 servers: a repeated authorization header is seen as its first value only');

  let healthPort: number | undefined;
  if (config.healthPort !== undefined) {
    healthServer = new grpc.Server();
    health.addToServer(healthServer);
    healthPort = await bind(healthServer, hostPort(config.host, config.healthPort), grpc.ServerCredentials.createInsecure()).catch(abandonStart);
    logger.info({ port: healthPort }, 'plaintext health server listening');
  }

  if (config.httpPort !== 0) {
    httpApi = await startHttpApi(
      {
        models: host,
        servedModels: () => host.loadedVersions().map((v) => ({ info: v.info, since: v.active ? servingSince() : v.lastUsedMs })),
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
        tls: config.tlsCert !== undefined && config.tlsKey !== undefined
          ? { certFile: config.tlsCert, keyFile: config.tlsKey, clientCaFile: config.tlsClientCa, reloadIntervalMs: config.credentialsReloadSeconds * 1000 }
          : undefined,
      },
    ).catch(abandonStart);
    logger.info({ host: config.host, port: httpApi.port, tls: config.tlsCert !== undefined }, 'http api listening (OpenAI-compatible /v1/embeddings)');
  }

  const metricsServer = await startMetricsServer({ metrics, port: config.metricsPort, host: config.host }).catch(abandonStart);
  logger.info({ port: metricsServer.port }, 'metrics and probes listening (/metrics, /healthz, /readyz)');

  let shuttingDown: Promise<void> | undefined;

  const ready = (async () => {
    const t0 = Date.now();
    const loaded = await loader(config, logger);
    if (gate.phase !== 'starting') {
      // Shut down while loading: nothing will serve this model.
      await loaded.close();
      throw new Error('server was shut down before the model finished loading');
    }
    host.install(loaded, loaded.bundle.dir);
    // Registers the configured model and restores the last activated version before serving.
    await finetune?.start();
    gate.setPhase('serving');
    setHealth('SERVING');
    const { name, version, provider, demo, embedDim } = host.info();
    metrics.service.setModelLoadSeconds((Date.now() - t0) / 1000);
    logger.info({ model: { name, version, provider, demo, embedDim }, loadSeconds: (Date.now() - t0) / 1000 }, 'model ready: serving');
  })();
  ready.catch((err: unknown) => logger.error({ err }, 'model failed to load'));

  const shutdown = (graceSeconds = config.shutdownGraceSeconds): Promise<void> => {
    shuttingDown ??= drainAndStop({ gate, setHealth, logger, server, healthServer, httpApi, apiKeys, finetune, host, ready, metricsServer }, graceSeconds);
    return shuttingDown;
  };

  const running: RunningServer = {
    port,
    healthPort,
    httpPort: httpApi?.port,
    metricsPort: metricsServer.port,
    metrics,
    config,
    logger,
    get model(): LoadedModel {
      if (!host.ready) throw new Error('the model is still loading (await running.ready)');
      return host.current().model;
    },
    ready,
    isReady: () => gate.phase === 'serving',
    phase: () => gate.phase,
    stats: () => ({ phase: gate.phase, inFlightCalls: gate.inFlight, batchers: host.ready ? host.embedder().stats() : undefined, streams: streamStats }),
    shutdown,
  };

  if (input.waitUntilReady !== false) {
    try {
      await ready;
    } catch (err) {
      await shutdown(0);
      throw err;
    }
  }
  return running;
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

/** The API keys in force, when any are configured (their file re-read every credentialsReloadSeconds). */
function apiKeySource(config: ServeConfig, logger: Logger, metrics: ClipserveMetrics): ApiKeySource | undefined {
  if (config.apiKeysFile === undefined && config.apiKeys === undefined) return undefined;
  return new ApiKeySource({
    file: config.apiKeysFile,
    envValue: config.apiKeys,
    reloadIntervalMs: config.credentialsReloadSeconds * 1000,
    logger,
    onReloadFailure: config.authReloadFailure,
    observer: metrics.credentials.observer('api_keys'),
  });
}
