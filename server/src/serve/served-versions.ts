/**
 * The served versions of a server: the active one, hot-swappable (ModelService.ActivateModel), and
 * the ones pinned calls load on demand within the budget, each with its own embedder (batchers)
 * configured from the server's options. Filled in once the first model is ready; the call gate
 * keeps calls away until then.
 */
import type { Logger } from 'pino';
import type { BatcherObserver } from '../batching';
import { Embedder } from '../inference/embedder';
import { ModelHost } from '../inference/model-host';
import type { ClipserveMetrics } from '../metrics';
import { bundleBytes } from '../model/footprint';
import type { LoadedModel } from '../runtime/model';
import { ModelNotFoundError, type ModelRegistry } from '../versions/registry';
import type { ServeConfig } from './config';
import type { ModelLoader } from './model-loader';

export function createModelHost(o: {
  config: ServeConfig;
  loader: ModelLoader;
  logger: Logger;
  metrics: ClipserveMetrics;
  /** Batcher metrics hook (default: the server's own Prometheus service metrics, per version). */
  observer?: BatcherObserver;
  /** The version registry, when the server has a data directory. */
  registry: () => ModelRegistry | undefined;
}): { host: ModelHost<LoadedModel>; servingSince: () => number } {
  const { config, loader, logger, metrics } = o;
  let servingSince = Date.now();
  const host: ModelHost<LoadedModel> = new ModelHost<LoadedModel>({
    load: (bundleDir) => loader({ ...config, model: bundleDir }, logger),
    createEmbedder: (m, version) =>
      new Embedder(m, {
        maxBatchSize: config.maxBatchSize,
        maxQueueDelayMs: config.maxQueueDelayMs,
        queueBound: config.queueBound,
        maxRequestPixels: config.maxRequestPixels,
        queuePixels: config.imageQueuePixels,
        queueTextChars: config.textQueueChars,
        callerShare: config.queueCallerShare,
        observer: o.observer ?? metrics.service.forVersion(version),
      }),
    // Without a data directory the configured model is the only version (and it is always loaded).
    locate: async (version) => {
      const registry = o.registry();
      if (registry) return (await registry.get(version)).bundleDir;
      throw new ModelNotFoundError(
        version,
        `this server serves only ${JSON.stringify(host.info().version)}; start it with --data-dir to serve fine-tuned versions`,
      );
    },
    sizeOf: bundleBytes,
    budget: { maxVersions: config.maxLoadedVersions, maxBytes: config.maxLoadedBytes },
    onActivated: ({ name, version, provider, demo, precision }, previous) => {
      servingSince = Date.now();
      metrics.service.setModelInfo({ name, version, provider, demo, precision });
      if (previous) logger.info({ version, previous: previous.version }, 'model version switched');
    },
    onLoadedChanged: (loaded) => metrics.service.setLoadedVersions(loaded),
    logger,
  });
  return { host, servingSince: () => servingSince };
}
