/**
 * Image and text features of a list of image–caption pairs under one bundle, for the int8
 * retrieval figures (bench/int8-retrieval.ts, bench/int8-retrieval-towers.ts): the same offline
 * batch loop as `clipserve eval`, kept as features so that towers can be mixed and perturbed.
 */
import * as fs from 'node:fs';
import { encodeInBatches } from '../server/src/inference/batch-encode';
import { loadModel } from '../server/src/runtime/model';

export interface PairFeatures {
  image: Float32Array;
  text: Float32Array;
  n: number;
  dim: number;
  logitScale: number;
}

export async function encodePairs(
  bundleDir: string,
  pairs: readonly { image: string; caption: string }[],
): Promise<PairFeatures> {
  const model = await loadModel(bundleDir, { provider: 'cpu', preprocessWorkers: 1 });
  try {
    const f = await encodeInBatches(model, pairs, {
      batchSize: 32,
      image: (p) => model.preprocessImage(fs.readFileSync(p.image)),
      text: (p) => p.caption,
    });
    return { ...f, n: pairs.length, dim: model.info.embedDim, logitScale: model.info.logitScale };
  } finally {
    await model.close();
  }
}
