/**
 * The adapter training loop over precomputed features: seeded shuffles per epoch, AdamW with
 * open_clip's cosine schedule, validation metrics after every epoch and an atomic checkpoint
 * (parameters + optimizer state) at the end of each epoch, from which a restarted job resumes.
 * Pure computation and file I/O; it runs inside a worker thread (trainer-worker.ts).
 */
import * as fs from 'node:fs';
import { clipMetrics, type RetrievalMetrics } from '../../eval/metrics';
import { writeFileAtomic } from './atomic-file';
import {
  adamWStep,
  applyAdapter,
  contrastiveLossAndGrads,
  cosineLr,
  newAdamState,
  permutation,
  seededRandom,
  type AdamState,
  type AdapterParams,
} from './math';

export interface TrainSettings {
  learningRate: number;
  warmupSteps: number;
  batchSize: number;
  epochs: number;
  weightDecay: number;
  seed: number;
}

export interface FeatureSet {
  n: number;
  /** n×d raw image / text features. */
  image: Float32Array;
  text: Float32Array;
}

export interface TrainInput {
  d: number;
  /** exp(logit_scale) of the base model. */
  scale: number;
  train: FeatureSet;
  validation: FeatureSet;
  settings: TrainSettings;
  checkpointPath: string;
}

export interface Checkpoint {
  /** Epochs completed. */
  epoch: number;
  step: number;
  params: AdapterParams;
  adamImage: AdamState;
  adamText: AdamState;
}

export type TrainProgress =
  | { type: 'step'; step: number; totalSteps: number; epoch: number; loss: number; learningRate: number }
  | { type: 'epoch'; epoch: number; step: number; trainLoss: number; metrics: RetrievalMetrics };

export function stepsPerEpoch(n: number, batchSize: number): number {
  // open_clip drops the last incomplete batch; a batch of one has no negatives to learn from.
  return Math.max(1, Math.floor(n / Math.min(batchSize, n)));
}

/** Retrieval metrics of features passed through the adapters (W = 0: the base model). */
export function adaptedMetrics(params: AdapterParams, set: FeatureSet, d: number, scale: number): RetrievalMetrics {
  const norm = (x: Float64Array): Float32Array => {
    const out = new Float32Array(x.length);
    for (let b = 0; b < set.n; b++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += x[b * d + k] * x[b * d + k];
      const r = Math.max(Math.sqrt(s), 1e-12); // F.normalize's eps
      for (let k = 0; k < d; k++) out[b * d + k] = x[b * d + k] / r;
    }
    return out;
  };
  const img = norm(applyAdapter(set.image, set.n, d, params.wImage));
  const txt = norm(applyAdapter(set.text, set.n, d, params.wText));
  return clipMetrics(img, txt, set.n, d, scale).metrics;
}

// -- checkpoints ----------------------------------------------------------------------------

const MAGIC = 'clipserve-adapter-ckpt-1';

export function saveCheckpoint(file: string, c: Checkpoint): void {
  const header = Buffer.from(
    JSON.stringify({
      magic: MAGIC,
      epoch: c.epoch,
      step: c.step,
      size: c.params.wImage.length,
      tImage: c.adamImage.t,
      tText: c.adamText.t,
    }),
  );
  const arrays = [c.params.wImage, c.params.wText, c.adamImage.m, c.adamImage.v, c.adamText.m, c.adamText.v];
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  // Pad to 8 bytes so the float64 arrays can be read in place.
  const pad = Buffer.alloc((8 - ((4 + header.length) % 8)) % 8);
  writeFileAtomic(file, [len, header, pad, ...arrays]);
}

export function loadCheckpoint(file: string, expectedSize: number): Checkpoint | undefined {
  if (!fs.existsSync(file)) return undefined;
  const buf = fs.readFileSync(file);
  const hlen = buf.readUInt32LE(0);
  const h = JSON.parse(buf.subarray(4, 4 + hlen).toString('utf8')) as {
    magic: string;
    epoch: number;
    step: number;
    size: number;
    tImage: number;
    tText: number;
  };
  if (h.magic !== MAGIC) throw new Error(`${file} is not an adapter checkpoint`);
  if (h.size !== expectedSize) throw new Error(`${file} holds ${h.size}-value adapters, expected ${expectedSize}`);
  let off = 4 + hlen;
  off += (8 - (off % 8)) % 8;
  const next = (): Float64Array => {
    const a = new Float64Array(h.size);
    new Uint8Array(a.buffer).set(buf.subarray(off, off + h.size * 8));
    off += h.size * 8;
    return a;
  };
  if (buf.length !== off + 6 * h.size * 8) throw new Error(`${file} is truncated`);
  const wImage = next();
  const wText = next();
  const adamImage = { m: next(), v: next(), t: h.tImage };
  const adamText = { m: next(), v: next(), t: h.tText };
  return { epoch: h.epoch, step: h.step, params: { wImage, wText }, adamImage, adamText };
}

/** Runs (or resumes) training; returns the final adapters. */
export function train(input: TrainInput, onProgress: (p: TrainProgress) => void): AdapterParams {
  const { d, scale, train: set, settings: s } = input;
  const size = d * d;
  const B = Math.min(s.batchSize, set.n);
  const perEpoch = stepsPerEpoch(set.n, s.batchSize);
  const totalSteps = perEpoch * s.epochs;
  const ckpt = loadCheckpoint(input.checkpointPath, size) ?? {
    epoch: 0,
    step: 0,
    params: { wImage: new Float64Array(size), wText: new Float64Array(size) },
    adamImage: newAdamState(size),
    adamText: newAdamState(size),
  };
  const { params } = ckpt;
  let step = ckpt.step;
  const img = new Float32Array(B * d);
  const txt = new Float32Array(B * d);
  for (let epoch = ckpt.epoch; epoch < s.epochs; epoch++) {
    // Each epoch's order depends only on (seed, epoch), so a resumed run replays it exactly.
    const order = permutation(set.n, seededRandom((s.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0));
    let lossSum = 0;
    for (let b = 0; b < perEpoch; b++) {
      for (let r = 0; r < B; r++) {
        const row = order[b * B + r];
        img.set(set.image.subarray(row * d, row * d + d), r * d);
        txt.set(set.text.subarray(row * d, row * d + d), r * d);
      }
      const lr = cosineLr(step, s.learningRate, s.warmupSteps, totalSteps);
      const { loss, gradImage, gradText } = contrastiveLossAndGrads(params, img, txt, B, d, scale);
      const opt = { lr, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: s.weightDecay }; // open_clip_train's defaults for ViT
      adamWStep(params.wImage, gradImage, ckpt.adamImage, opt);
      adamWStep(params.wText, gradText, ckpt.adamText, opt);
      step++;
      lossSum += loss;
      onProgress({ type: 'step', step, totalSteps, epoch: epoch + 1, loss, learningRate: lr });
    }
    saveCheckpoint(input.checkpointPath, {
      epoch: epoch + 1,
      step,
      params,
      adamImage: ckpt.adamImage,
      adamText: ckpt.adamText,
    });
    onProgress({
      type: 'epoch',
      epoch: epoch + 1,
      step,
      trainLoss: lossSum / perEpoch,
      metrics: adaptedMetrics(params, input.validation, d, scale),
    });
  }
  return params;
}
