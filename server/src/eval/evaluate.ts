/**
 * Zero-shot retrieval evaluation of a loaded model on image–caption pairs, the way
 * open_clip_train's `evaluate` does it: features from the model, L2-normalised (F.normalize),
 * then get_clip_metrics with the model's exp'd logit scale.
 */
import * as fs from 'node:fs/promises';
import type { LoadedModel } from '../runtime/model';
import { encodeInBatches } from '../inference/batch-encode';
import { l2normalize } from '../inference/heads';
import type { ImageCaptionPair } from '../dataset/csv';
import { clipMetrics, type RetrievalMetrics } from './metrics';

export interface EvalOptions {
  batchSize?: number;
  /** Called after every batch with the number of pairs embedded so far. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  numSamples: number;
  metrics: RetrievalMetrics;
  imageToTextRanks: Int32Array;
  textToImageRanks: Int32Array;
}

export class EvalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EvalError';
  }
}

async function readImage(file: string): Promise<Uint8Array> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    throw new EvalError(`cannot read image ${file}: ${(e as Error).message}`);
  }
}

export async function evaluateRetrieval(
  model: LoadedModel,
  pairs: ImageCaptionPair[],
  opts: EvalOptions = {},
): Promise<EvalResult> {
  const batchSize = opts.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new EvalError(`batch size must be a positive integer, got ${batchSize}`);
  if (pairs.length === 0) throw new EvalError('no image–caption pairs to evaluate');
  const dim = model.info.embedDim;
  const { image: imageFeatures, text: textFeatures } = await encodeInBatches(model, pairs, {
    batchSize,
    image: async (p) => {
      const bytes = await readImage(p.image);
      try {
        return await model.preprocessImage(bytes);
      } catch (e) {
        throw new EvalError(`cannot use image ${p.image}: ${(e as Error).message}`);
      }
    },
    text: (p) => p.caption,
    onProgress: opts.onProgress,
  });
  const r = clipMetrics(
    l2normalize(imageFeatures, dim),
    l2normalize(textFeatures, dim),
    pairs.length,
    dim,
    model.info.logitScale,
  );
  return {
    numSamples: pairs.length,
    metrics: r.metrics,
    imageToTextRanks: r.image_to_text_ranks,
    textToImageRanks: r.text_to_image_ranks,
  };
}
