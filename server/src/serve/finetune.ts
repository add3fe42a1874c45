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
import type { ModelHost } from '../inference/model-host';
import { ModelVersions } from '../versions/model-versions';
import { ModelRegistry } from '../versions/registry';
import type { LoadedModel } from '../runtime/model';
import { openStore } from '../store/open';
import { redactDatabaseUrl } from '../store/postgres-store';
import type { Store } from '../store/store';
import type { ServeConfig } from './config';

const CLOSE_WAIT_MS = 10_000;

export interface FineTuneSubsystem {
  readonly store: Store;
  readonly registry: ModelRegistry;
  /** Restore, activate and follow the active version (versions/model-versions.ts). */
  readonly versions: ModelVersions;
  readonly runner: FineTuneJobRunner;
  /** After the first model is installed: registers it, restores the last activated version, starts the queue and the follower. */
  start(): Promise<void>;
  close(): Promise<void>;
}

function methods(config: ServeConfig & { dataDir: string }, logger: Logger): FineTuneMethod[] {
  // Background work: a bounded number of threads, at the lowest priority (see createAdapterMethod).
  const threads = config.finetuneThreads;
  // Training images are held to the serving decoder's limits: no more latitude than served ones.
  const imageLimits = { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels };
  const runtime = { provider: config.provider, intraOpThreads: threads, preprocessWorkers: threads, imageLimits };
  const list: FineTuneMethod[] = [createAdapterMethod({ dataDir: config.dataDir, runtime })];
  let kube = null;
  try {
    kube = loadKubeConfig();
  } catch (err) {
    logger.warn({ err }, 'no usable Kubernetes configuration: the full fine-tune method will refuse jobs');
  }
  list.push(
    createFullMethod({
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
    }),
  );
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
    onConnectionError: (err) =>
      logger.warn(
        { err },
        'a database connection failed: it is replaced (notifications missed meanwhile are covered by polling)',
      ),
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
  const versions = new ModelVersions({ registry, host, onNotification: (l) => store.onNotification(l), logger });
  o.server.addService(o.protos.modelService, modelServiceHandlers({ versions, gate: o.gate, logger }));
  logger.info(
    { dataDir: store.dataDir, database: config.databaseUrl ? redactDatabaseUrl(config.databaseUrl) : 'sqlite' },
    'fine-tuning enabled',
  );

  return {
    store,
    registry,
    versions,
    runner,
    async start() {
      const current = host.current().model;
      await versions.restore({ version: current.info.version, name: current.info.name, bundleDir: current.bundle.dir });
      await runner.start();
      versions.startFollowing();
    },
    async close() {
      await versions.close();
      // A method stops at its next check of the signal; a long step (a batch of a large model on
      // the CPU) must not hold the process: the job stays `running` and the next start resumes it.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([runner.close(), new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
    },
  };
}
