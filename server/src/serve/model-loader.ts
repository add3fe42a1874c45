/**
 * Turns `--model` into a loaded, warmed model: a bundle directory or hf-hub reference (resolved and
 * cached by server/src/hub), or, when none is configured, the demo bundle built once in the cache
 * directory.
 */
import * as os from 'node:os';
import type { Logger } from 'pino';
import { ensureDemoBundle } from '../model/demo';
import { resolveModelRef } from '../hub';
import { loadModel } from '../runtime/model';
import type { LoadedModel, RuntimeOptions } from '../runtime/model';
import type { ServeConfig } from './config';

export type ModelLoader = (config: ServeConfig, logger: Logger) => Promise<LoadedModel>;

export const loadServedModel: ModelLoader = async (config, logger) => {
  let bundleDir: string;
  if (config.model === undefined) {
    bundleDir = await ensureDemoBundle(config.cacheDir);
    logger.warn(
      { bundleDir },
      'no --model given: serving the random-weight demo bundle (its embeddings carry no meaning)',
    );
  } else {
    bundleDir = await resolveModelRef(config.model, {
      cacheDir: config.cacheDir,
      onStatus: (message) => logger.info({ model: config.model }, message),
    });
  }
  // The image limits and decode budget are the model's, fixed here for its preprocessing workers.
  const options: RuntimeOptions = {
    provider: config.provider,
    imageLimits: { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels },
    decodeTimeoutSeconds: config.imageDecodeTimeoutSeconds,
  };
  if (config.intraOpThreads !== undefined) options.intraOpThreads = config.intraOpThreads;
  if (config.preprocessWorkers !== undefined) options.preprocessWorkers = config.preprocessWorkers;
  // One caller's flood leaves a worker (and a core) to everyone else: see --preprocess-workers-per-caller.
  options.preprocessWorkersPerCaller =
    config.preprocessWorkersPerCaller ?? Math.max(1, (config.preprocessWorkers ?? os.availableParallelism()) - 1);
  const model = await loadModel(bundleDir, options);
  try {
    await model.warmup();
  } catch (err) {
    await model.close().catch(() => undefined);
    throw err;
  }
  return model;
};
