/**
 * What `--data-dir` turns on: the store (SQLite in the data directory, or PostgreSQL with
 * `--database-url`), dataset catalogue, model registry and fine-tune job
 * runner (with the `adapter` method, and `full` when a Kubernetes cluster is reachable), and the
 * FineTuneService / ModelService handlers over them. Kept apart from server.ts so the server
 * without a data directory stays exactly what it was.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DatasetCatalog } from '../finetune/dataset';
import { createAdapterMethod } from '../finetune/adapter';
import { createFullMethod, loadKubeConfig } from '../finetune/full';
import { FineTuneJobRunner } from '../finetune/jobs';
import type { FineTuneMethod } from '../finetune/method';
import type { CallGate } from '../grpc/call-context';
import { fineTuneServiceHandlers } from '../grpc/finetune-service';
import { modelServiceHandlers } from '../grpc/models-service';
import type { LoadedProtos } from '../grpc/proto';
import type { ClipserveMetrics } from '../metrics';
import type { ModelHost } from '../models/host';
import { ACTIVE_VERSION_KEY, ModelRegistry } from '../models/registry';
import type { LoadedModel } from '../runtime/model';
import { openStore } from '../store/open';
import { redactDatabaseUrl } from '../store/postgres-store';
import type { Store } from '../store/store';
import type { ServeConfig } from './config';

const FOLLOW_INTERVAL_MS = 10_000;
const FOLLOW_RETRY_MS = 5 * 60_000;
const CLOSE_WAIT_MS = 10_000;

export interface FineTuneSubsystem {
  readonly store: Store;
  readonly registry: ModelRegistry;
  readonly runner: FineTuneJobRunner;
  /** After the first model is installed: registers it, restores the last activated version, starts the queue. */
  start(): Promise<void>;
  close(): Promise<void>;
}

function methods(config: ServeConfig & { dataDir: string }, logger: Logger): FineTuneMethod[] {
  // Background work: a bounded number of threads, at the lowest priority (see createAdapterMethod).
  const threads = config.finetuneThreads;
  const runtime = { provider: config.provider, intraOpThreads: threads, preprocessWorkers: threads };
  const imageLimits = { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels };
  const list: FineTuneMethod[] = [createAdapterMethod({ dataDir: config.dataDir, runtime, imageLimits })];
  let kube = null;
  try {
    kube = loadKubeConfig();
  } catch (err) {
    logger.warn({ err }, 'no usable Kubernetes configuration: the full fine-tune method will refuse jobs');
  }
  list.push(createFullMethod({
    kube,
    image: config.finetuneImage,
    namespace: config.finetuneNamespace,
    storage: { pvcName: config.finetunePvc, mountPath: config.dataDir },
    workersPerGpu: config.finetuneWorkersPerGpu,
    pod: {
      gpuResource: config.finetuneGpuResource,
      ...(config.finetuneNodeSelector ? { nodeSelector: config.finetuneNodeSelector } : {}),
      ...(config.finetuneTolerations ? { tolerations: config.finetuneTolerations } : {}),
      ...(config.finetuneImagePullSecrets ? { imagePullSecrets: config.finetuneImagePullSecrets } : {}),
      ...(config.finetuneShmSize ? { shmSize: config.finetuneShmSize } : {}),
      ...(config.finetuneServiceAccount ? { serviceAccountName: config.finetuneServiceAccount } : {}),
    },
  }));
  return list;
}

export async function openFineTune(o: {
  config: ServeConfig & { dataDir: string };
  logger: Logger;
  host: ModelHost<LoadedModel>;
  metrics: ClipserveMetrics;
  gate: CallGate;
  protos: LoadedProtos;
  server: grpc.Server;
}): Promise<FineTuneSubsystem> {
  const { config, logger, host } = o;
  const dataDir = config.dataDir;
  const store = await openStore({
    dataDir,
    databaseUrl: config.databaseUrl,
    onConnectionError: (err) => logger.warn({ err }, 'a database connection failed: it is replaced (notifications missed meanwhile are covered by polling)'),
  });
  const catalog = new DatasetCatalog(store, store.dataDir, {
    maxBytes: config.datasetMaxBytes,
    maxPairs: config.datasetMaxPairs,
    maxZipEntries: config.datasetMaxZipEntries,
    maxDatasetsPerKey: config.datasetMaxPerKey,
  });
  const registry = new ModelRegistry(store, store.dataDir);
  const runner = new FineTuneJobRunner({
    store,
    catalog,
    registry,
    dataDir: store.dataDir,
    methods: methods({ ...config, dataDir: store.dataDir }, logger),
    activeVersion: () => host.info().version,
    logger: logger.child({ component: 'finetune' }),
    imageLimits: { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels },
  });
  o.metrics.service.setFineTuneJobCountsSource(() => runner.counts());
  o.metrics.grpc.preRegister(o.protos.fineTuneService);
  o.metrics.grpc.preRegister(o.protos.modelService);
  o.server.addService(o.protos.fineTuneService, fineTuneServiceHandlers({ runner, catalog, gate: o.gate, logger }));
  o.server.addService(o.protos.modelService, modelServiceHandlers({ registry, host, gate: o.gate, logger }));
  logger.info({ dataDir: store.dataDir, database: config.databaseUrl ? redactDatabaseUrl(config.databaseUrl) : 'sqlite' }, 'fine-tuning enabled');

  // Replicas sharing the store follow the version activated on any of them: at once when the
  // store notifies the change (PostgreSQL), else (and as a safety net) every FOLLOW_INTERVAL_MS.
  let follower: NodeJS.Timeout | undefined;
  let unlisten = (): void => undefined;
  const failedAt = new Map<string, number>();
  let following: Promise<void> | undefined;
  let followAgain = false;
  const followOnce = async (): Promise<void> => {
    const wanted = await registry.persistedActive();
    if (!wanted || !host.ready || host.info().version === wanted || !(await registry.has(wanted))) return;
    if (Date.now() - (failedAt.get(wanted) ?? 0) < FOLLOW_RETRY_MS) return;
    try {
      await host.activate(wanted);
      logger.info({ version: wanted }, 'switched to the model version activated on another instance');
    } catch (err) {
      failedAt.set(wanted, Date.now());
      logger.error({ err, version: wanted }, 'cannot switch to the model version activated on another instance');
    }
  };
  // One activation at a time; a change announced during one is read after it.
  const follow = (): void => {
    if (following) {
      followAgain = true;
      return;
    }
    following = (async () => {
      do {
        followAgain = false;
        await followOnce().catch((err: unknown) => logger.error({ err }, 'cannot read the active model version'));
      } while (followAgain);
    })().finally(() => (following = undefined));
  };

  return {
    store,
    registry,
    runner,
    async start() {
      const current = host.current().model;
      await registry.registerBase(current.info.version, current.info.name, current.bundle.dir);
      const wanted = await registry.persistedActive();
      if (wanted && wanted !== current.info.version && (await registry.has(wanted))) {
        try {
          await host.activate(wanted);
          logger.info({ version: wanted }, 'restored the last activated model version');
        } catch (err) {
          logger.error({ err, version: wanted }, 'cannot restore the last activated model version: serving the configured model');
        }
      }
      await runner.start();
      unlisten = store.onNotification((n) => {
        if ((n.kind === 'setting' && n.key === ACTIVE_VERSION_KEY) || n.kind === 'resync') follow();
      });
      follower = setInterval(follow, FOLLOW_INTERVAL_MS);
      follower.unref();
    },
    async close() {
      clearInterval(follower);
      unlisten();
      await following;
      // A method stops at its next check of the signal; a long step (a batch of a large model on
      // the CPU) must not hold the process: the job stays `running` and the next start resumes it.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([runner.close(), new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
    },
  };
}
