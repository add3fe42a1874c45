/**
 * startServer: the gRPC embedding server, and its composition root. It binds first and reports
 * NOT_SERVING (health) and UNAVAILABLE (API) while the model loads and warms up, then serves.
 * shutdown() drains: health NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within the
 * grace period, then the servers, batchers and model are closed (serve/lifecycle.ts). The steps
 * are named functions below; the listeners are in serve/listeners.ts.
 */
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import { ApiKeySource, AuthPolicy, createAuthInterceptor } from '../auth';
import type { BatcherObserver, BatcherStats } from '../batching';
import { CallGate, ServingPhase } from '../grpc/call-context';
import { callerAdmission } from './caller-admission';
import { disabledServiceHandlers } from '../grpc/disabled-service';
import { StreamStats } from '../grpc/embed-stream';
import { embeddingServiceHandlers } from '../grpc/embedding-service';
import { EMBEDDING_SERVICE_NAME, loadProtos, type LoadedProtos } from '../grpc/proto';
import type { RequestLimits } from '../grpc/validate';
import type { ModelHost } from '../inference/model-host';
import { ClipserveMetrics } from '../metrics';
import type { LoadedModel } from '../runtime/model';
import { resolveServeConfig, ServeConfig } from './config';
import { openFineTune, type FineTuneSubsystem } from './finetune';
import { drainAndStop } from './lifecycle';
import { listen, OpenedParts, type BoundPorts } from './listeners';
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
  /** Replaces the model loader (the default resolves config.model / the demo bundle). A loader
   *  loads the model with the config's image limits and decode budget, as loadServedModel does:
   *  they are the model's, fixed at load. */
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

const START_OPTION_KEYS: readonly (keyof StartOptions)[] = [
  'interceptors',
  'observer',
  'logger',
  'waitUntilReady',
  'loadModel',
];
/** Health is reported for the whole server ("") and per service. */
const HEALTH_SERVICES = ['', EMBEDDING_SERVICE_NAME];

export async function startServer(input: StartServerConfig = {}): Promise<RunningServer> {
  const { config, logger, loader } = resolveStart(input);
  const protos = loadProtos();
  const gate = new CallGate();
  const streamStats = new StreamStats();
  const health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING' as const])));
  const setHealth = (status: 'SERVING' | 'NOT_SERVING') => HEALTH_SERVICES.forEach((s) => health.setStatus(s, status));
  const limits = requestLimits(config);
  const metrics = createMetrics(config, logger, protos, gate);

  // The served versions (see served-versions.ts); the fine-tune subsystem, once open, knows the others.
  let finetune: FineTuneSubsystem | undefined;
  const { host, servingSince } = createModelHost({
    config,
    loader,
    logger,
    metrics,
    observer: input.observer,
    registry: () => finetune?.registry,
  });
  const apiKeys = apiKeySource(config, logger, metrics);
  // Per-caller admission after the API keys (it needs the caller's key), before any handler decodes.
  const server = createGrpcServer(config, logger, metrics, apiKeys, [
    callerAdmission({ config, host, metrics, logger }),
    ...(input.interceptors ?? []),
  ]);
  server.addService(
    protos.embeddingService,
    embeddingServiceHandlers({
      models: host,
      limits,
      gate,
      logger,
      streamWindow: Math.max(8, 2 * config.maxBatchSize),
      streamStats,
    }),
  );
  const parts = new OpenedParts(server, apiKeys);
  finetune = parts.finetune = await addDataDirServices({ config, logger, host, metrics, gate, protos, server }).catch(
    parts.abandon,
  );
  health.addToServer(server);
  new ReflectionService(protos.packageDefinition).addToServer(server);
  const ports = await listen(parts, { config, logger, metrics, health, host, servingSince, limits, gate });

  const ready = loadFirstModel({ config, logger, loader, gate, host, finetune, metrics, setHealth });
  let shuttingDown: Promise<void> | undefined;
  const shutdown = (graceSeconds = config.shutdownGraceSeconds): Promise<void> => {
    shuttingDown ??= drainAndStop(
      {
        gate,
        setHealth,
        logger,
        server,
        healthServer: parts.healthServer,
        httpApi: parts.httpApi,
        apiKeys,
        finetune,
        host,
        ready,
        metricsServer: ports.metricsServer,
      },
      graceSeconds,
    );
    return shuttingDown;
  };
  const running = runningServer({ config, logger, metrics, ports, host, gate, ready, streamStats, shutdown });
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

/** The configuration (defaults applied) apart from the start options, the logger and the model loader. */
function resolveStart(input: StartServerConfig): { config: ServeConfig; logger: Logger; loader: ModelLoader } {
  const configInput: Record<string, unknown> = { ...input };
  for (const k of START_OPTION_KEYS) delete configInput[k];
  const config = resolveServeConfig(configInput);
  return { config, logger: input.logger ?? createLogger(config.logLevel), loader: input.loadModel ?? loadServedModel };
}

/** The per-request limits every transport enforces (and GetModelInfo reports). */
function requestLimits(config: ServeConfig): RequestLimits {
  return {
    maxItemsPerRequest: config.maxItemsPerRequest,
    maxImageBytes: config.maxImageBytes,
    maxImagePixels: config.maxImagePixels,
    maxMessageBytes: config.maxMessageBytes,
    maxBatchSize: config.maxBatchSize,
    maxTextChars: config.maxTextChars,
  };
}

function createMetrics(config: ServeConfig, logger: Logger, protos: LoadedProtos, gate: CallGate): ClipserveMetrics {
  const metrics = new ClipserveMetrics({ logger });
  metrics.grpc.preRegister(protos.embeddingService);
  metrics.setReadinessProbe(() => ({
    ready: gate.phase === 'serving',
    reason: gate.phase === 'serving' ? 'ok' : gate.phase,
  }));
  for (const modality of ['text', 'image'] as const) metrics.service.setQueueCapacity(modality, config.queueBound);
  return metrics;
}

/** The gRPC server with its interceptors: metrics, then API keys, then the caller's own. */
function createGrpcServer(
  config: ServeConfig,
  logger: Logger,
  metrics: ClipserveMetrics,
  apiKeys: ApiKeySource | undefined,
  extra: grpc.ServerInterceptor[] = [],
): grpc.Server {
  // Metrics interceptor first: it must wrap the transport call to see the statuses grpc-js sends
  // by itself (deadline, oversized request), see GrpcServerMetrics. API keys after the metrics,
  // so refused calls are counted and logged with their code.
  const auth = apiKeys
    ? createAuthInterceptor({
        keys: () => apiKeys.store,
        refusal: () => apiKeys.refusal,
        policy: new AuthPolicy({ openHealth: config.authOpenHealth, openReflection: config.authOpenReflection }),
        logger,
      })
    : undefined;
  if (apiKeys)
    logger.info(
      { keys: apiKeys.store.size, openHealth: config.authOpenHealth, openReflection: config.authOpenReflection },
      'API keys required',
    );
  else
    logger.warn(
      'no API keys configured: every caller may use every service (give --api-keys-file or CLIPSERVE_API_KEYS)',
    );
  return new grpc.Server({
    interceptors: [metrics.grpc.interceptor, ...(auth ? [auth] : []), ...extra],
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': config.maxMessageBytes,
    // channelz stays on although no channelz service is exposed and its bookkeeping costs ~0.05 ms
    // of the event loop per call: grpc-js 1.14 tracks a server's HTTP/2 sessions only with it on,
    // and without them forceShutdown() cannot cancel the calls a drain leaves behind.
  });
}

/** FineTuneService and ModelService: served with a data directory, else listed with a call that says how to turn them on. */
async function addDataDirServices(
  o: Omit<Parameters<typeof openFineTune>[0], 'config'> & { config: ServeConfig },
): Promise<FineTuneSubsystem | undefined> {
  const dataDir = o.config.dataDir;
  if (dataDir !== undefined) return openFineTune({ ...o, config: { ...o.config, dataDir } });
  // Reflection lists them: their calls say how to turn them on.
  const why =
    'fine-tuning and the model registry need a data directory: start the server with --data-dir <dir> (or CLIPSERVE_DATA_DIR)';
  o.server.addService(o.protos.fineTuneService, disabledServiceHandlers(o.protos.fineTuneService, why));
  o.server.addService(o.protos.modelService, disabledServiceHandlers(o.protos.modelService, why));
  return undefined;
}

/** Loads and installs the configured model, restores the last activated version, then serves. Settles when serving (or failed). */
function loadFirstModel(o: {
  config: ServeConfig;
  logger: Logger;
  loader: ModelLoader;
  gate: CallGate;
  host: ModelHost<LoadedModel>;
  finetune: FineTuneSubsystem | undefined;
  metrics: ClipserveMetrics;
  setHealth(status: 'SERVING' | 'NOT_SERVING'): void;
}): Promise<void> {
  const { gate, host, logger } = o;
  const ready = (async () => {
    const t0 = Date.now();
    const loaded = await o.loader(o.config, logger);
    if (gate.phase !== 'starting') {
      // Shut down while loading: nothing will serve this model.
      await loaded.close();
      throw new Error('server was shut down before the model finished loading');
    }
    host.install(loaded, loaded.bundle.dir);
    // Registers the configured model and restores the last activated version before serving.
    await o.finetune?.start();
    gate.setPhase('serving');
    o.setHealth('SERVING');
    const { name, version, provider, demo, embedDim } = host.info();
    o.metrics.service.setModelLoadSeconds((Date.now() - t0) / 1000);
    logger.info(
      { model: { name, version, provider, demo, embedDim }, loadSeconds: (Date.now() - t0) / 1000 },
      'model ready: serving',
    );
  })();
  ready.catch((err: unknown) => logger.error({ err }, 'model failed to load'));
  return ready;
}

function runningServer(o: {
  config: ServeConfig;
  logger: Logger;
  metrics: ClipserveMetrics;
  ports: BoundPorts;
  host: ModelHost<LoadedModel>;
  gate: CallGate;
  ready: Promise<void>;
  streamStats: StreamStats;
  shutdown(graceSeconds?: number): Promise<void>;
}): RunningServer {
  const { host, gate } = o;
  return {
    port: o.ports.port,
    healthPort: o.ports.healthPort,
    httpPort: o.ports.httpPort,
    metricsPort: o.ports.metricsServer.port,
    metrics: o.metrics,
    config: o.config,
    logger: o.logger,
    get model(): LoadedModel {
      if (!host.ready) throw new Error('the model is still loading (await running.ready)');
      return host.current().model;
    },
    ready: o.ready,
    isReady: () => gate.phase === 'serving',
    phase: () => gate.phase,
    stats: () => ({
      phase: gate.phase,
      inFlightCalls: gate.inFlight,
      batchers: host.ready ? host.embedder().stats() : undefined,
      streams: o.streamStats,
    }),
    shutdown: o.shutdown,
  };
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
