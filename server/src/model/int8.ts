/**
 * The int8 accuracy contract of the converter. For each tower it
 *   1. writes a calibration graph in which every quantizable projection runs both in float32 and
 *      in int8 (the float32 result flows on, so each layer sees exactly the activations of the
 *      float32 model) and reports Σ(y_int8 − y)² and Σy² per layer;
 *   2. runs it over the calibration set (./calibration-set: the served data when given, else
 *      generated inputs) and keeps in float32 every layer whose relative RMS drift
 *      sqrt(Σ(y_int8 − y)² / Σy²) exceeds the threshold: trained ViTs carry a few activation
 *      channels far larger than the rest, and a per-token scale stretched by them rounds every
 *      other channel of that token to a few levels;
 *   3. after the tower is written, runs it over the same set and measures the cosine of each int8
 *      embedding to the float32 one. A layer's local drift says little about what it does to the
 *      embedding (on the fine-tuned icon model every layer drifted ~1 %, but the attention output
 *      projections of the image tower and the first blocks of the text tower made most of the
 *      embedding error), so when the cosine misses the contract, ./int8-sensitivity measures each
 *      int8 layer's own end-to-end error and moves the costliest error per multiply-add back to
 *      float32 until the predicted error meets the contract; the tower is written and checked
 *      again (a few rounds at most). The manifest records the plan, the measurements and the
 *      final cosines.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  FINAL_PROJECTIONS,
  projectionWeight,
  DRIFT_ERR_PREFIX,
  DRIFT_REF_PREFIX,
  IMAGE_INPUT,
  INPUT_ABSMAX_PREFIX,
  INT8_ACTIVATIONS,
  smoothingSource,
  type Int8Activations,
  type Int8Kernel,
  IMAGE_OUTPUT,
  quantizableLayers,
  TEXT_INPUT,
  TEXT_OUTPUT,
  type WeightLookup,
} from '../onnx/clip-graph';
import { writeTowerModel, type Tower } from '../onnx/write-model';
import type { WireTensor } from '../runtime/session-protocol';
import { WorkerSession } from '../runtime/worker-session';
import { ClipTokenizer } from '../tokenizer';
import { calibrationTextBatch } from './calibration-inputs';
import type { CalibrationData, CalibrationSet } from './calibration-set';
import type { OpenClipConfig } from './config';
import { hasOutlierChannels, smoothedWeights, smoothingFactors } from './smoothing';

export interface Int8Settings {
  /** Calibration images and captions (each). */
  samples: number;
  /** Largest relative RMS drift of a layer's output that still runs in int8. */
  maxDrift: number;
  /** The tower's embeddings must keep at least these cosines to float32 on the calibration set. */
  minMeanCosine: number;
  minCosine: number;
  /** Calibration samples the per-layer end-to-end measurement runs on (./int8-sensitivity), when
   *  the check fails: one pass per int8 layer, so fewer than the calibration set. */
  sensitivitySamples: number;
  /** The image–caption pairs to calibrate on (`--calibration-data`, a fine-tune job's pairs);
   *  absent: generated inputs (./calibration-inputs). */
  data?: CalibrationData;
  /** How activations are quantized (../onnx/clip-graph `Int8Activations`). */
  activations: Int8Activations;
  /** The int8 GEMM formulation of the written towers (../onnx/clip-graph `Int8Kernel`). */
  kernel: Int8Kernel;
  /** SmoothQuant migration strength α for LayerNorm-fed projections with outlier input channels
   *  (./smoothing); 0 turns smoothing off. */
  smoothing: number;
  /** 'fp32' keeps the final projections (`visual.proj`, `text_projection`) in float32 whatever
   *  their drift: they multiply one row per sample (the pooled token), so int8 saves nothing
   *  measurable there, while their error lands in the embedding unaveraged, and a fine-tuned
   *  adapter is folded into them (their drift was the largest of each tower on the fine-tuned
   *  retrieval model, docs/int8.md). 'int8' lets calibration decide, like any projection. */
  finalProjections: 'fp32' | 'int8';
}

/** 256 images and 256 captions; the drift bound and the activation scheme are measured in docs/int8.md.
 *  The end-to-end contract is stricter than the floor (mean 0.995, min 0.99): on the
 *  fine-tuned icon model a mean of 0.997 still moved held-out retrieval by up to 1.8 points, 0.999
 *  by under 1 (docs/int8.md); every other model measured meets 0.999 with all layers int8.
 *  Smoothing is opt-in (α 0.5 measured): on the stress ViT-L/14 it kept 84/97 image projections in
 *  int8 within the contract on held-out inputs, but the text tower (27/49) missed it on held-out
 *  captions (min 0.979) while passing the check on the calibration captions (docs/int8.md). */
export const DEFAULT_INT8_SETTINGS: Int8Settings = {
  samples: 256,
  maxDrift: 0.05,
  minMeanCosine: 0.999,
  minCosine: 0.995,
  sensitivitySamples: 16,
  activations: 'shifted-gelu',
  smoothing: 0,
  kernel: 'matmul-integer',
  finalProjections: 'fp32',
};

export { INT8_ACTIVATIONS };

/** Rounds of "write, check, move the worst eighth back to float32" after the per-layer choice
 *  (an eighth at a time: a quarter overshot, e.g. 3 of 9 layers demoted where 2 met the check). */
export const MAX_CHECK_ROUNDS = 10;

/** Whether measured cosines meet the settings' contract. */
export const meetsContract = (c: { mean: number; min: number }, s: Int8Settings): boolean =>
  c.mean >= s.minMeanCosine && c.min >= s.minCosine;

/** The plan with the eighth (at least one) of its int8 layers that score worst moved to float32. */
export function demoteWorst(layers: ReadonlySet<string>, score: Record<string, number>): Set<string> {
  const sorted = [...layers].sort((a, b) => score[b] - score[a]);
  return new Set(sorted.slice(Math.max(1, Math.ceil(sorted.length / 8))));
}

export interface TowerInt8Record {
  int8_layers: string[];
  fp32_layers: string[];
  /** Relative RMS drift of each quantizable layer on the calibration set, 4 significant digits. */
  drift: Record<string, number>;
  /** Cosine of the int8 tower's embeddings to the float32 tower's on the calibration set. */
  cosine_to_fp32: { mean: number; min: number };
  /** Layers moved back to float32 by the end-to-end check (beyond those over max_drift). */
  demoted_by_check: string[];
  /** When the check failed: each measured layer's end-to-end error alone (mean 1 − cosine of the
   *  embedding with only that layer in int8, on `sensitivity_samples` samples). Absent when the
   *  first check passed, and in older bundles. */
  sensitivity?: Record<string, number>;
  sensitivity_samples?: number;
  /** Layers kept in float32 by the settings (`finalProjections`), whatever their drift. Absent
   *  in older bundles. */
  kept_fp32?: string[];
  /** Layers smoothed (./smoothing) before quantization: their LayerNorm and weight are rescaled
   *  per channel in the bundle (the same function in float32). Absent in older bundles. */
  smoothed_layers?: string[];
}

/** What an int8 bundle's manifest records in its `int8` field. */
export interface Int8Record {
  method: (typeof INT8_METHODS)[Int8Activations];
  max_drift: number;
  /** What the end-to-end check held each tower to. */
  cosine_contract: { mean: number; min: number };
  /** `generator`: where the calibration inputs came from (generated, or the served data's source). */
  calibration: { images: number; captions: number; generator: string };
  towers: Record<Tower, TowerInt8Record>;
}

/** The manifest's description of each activation scheme (bundles written before 'shifted-gelu'
 *  existed carry the symmetric one). */
export const INT8_METHODS = {
  symmetric: 'weights per output channel (symmetric), activations per token (dynamic, symmetric); MatMulInteger',
  'shifted-gelu':
    'weights per output channel (symmetric), activations per token (dynamic; symmetric, GELU outputs shifted by 0.17 onto uint8 [0, 255]); MatMulInteger',
} as const satisfies Record<Int8Activations, string>;

const IMAGE_BATCH = 8;
const TEXT_BATCH = 32;

/** The converter's passes over the calibration set, for progress reports. */
export type CalibrationPass = 'calibrate' | 'check' | 'sensitivity';

export interface CalibrationContext {
  config: OpenClipConfig;
  weights: WeightLookup;
  vocabFile: string;
  settings: Int8Settings;
  /** The images and captions calibration and the check run on (settings.samples of them at most). */
  set: CalibrationSet;
  producerVersion: string;
  /** A scratch directory for the calibration graphs (removed by the caller). */
  scratchDir: string;
  onProgress?: (tower: Tower, done: number, total: number) => void;
}

/** A CPU session in a worker thread, configured like the server's: calibration never runs on the
 *  event loop (pull may convert inside a serving process). */
export async function openSession(modelPath: string, tower: Tower): Promise<WorkerSession> {
  return WorkerSession.create(
    { modelPath, providers: ['cpu'], graphOptimizationLevel: 'all' },
    `int8 calibration of the ${tower} tower`,
  );
}

export const floats = (t: WireTensor): Float32Array => new Float32Array(t.data);

/** Runs `session` over the first `count` samples of the calibration set (all of them by default),
 *  batch by batch. */
export async function forEachBatch(
  ctx: CalibrationContext,
  tower: Tower,
  session: WorkerSession,
  outputs: string[],
  visit: (out: Record<string, WireTensor>, n: number) => void,
  count = ctx.set.captions.length,
): Promise<void> {
  const cfg = ctx.config.model_cfg;
  const total = Math.min(count, ctx.set.captions.length);
  const tokenizer = tower === 'textual' ? ClipTokenizer.fromMergesFile(ctx.vocabFile) : undefined;
  const batch = tower === 'visual' ? IMAGE_BATCH : TEXT_BATCH;
  for (let from = 0; from < total; from += batch) {
    const n = Math.min(batch, total - from);
    let feeds: Record<string, WireTensor>;
    if (tower === 'visual') {
      const S = cfg.vision_cfg.image_size;
      const pixels = await ctx.set.images(from, n);
      feeds = { [IMAGE_INPUT]: { type: 'float32', data: pixels.buffer as ArrayBuffer, dims: [n, 3, S, S] } };
    } else {
      const t = calibrationTextBatch(ctx.set.captions, from, n, tokenizer!, cfg.text_cfg.context_length);
      feeds = { [TEXT_INPUT]: { type: 'int64', data: t.ids.buffer as ArrayBuffer, dims: t.dims } };
    }
    visit(await session.run(feeds, outputs), n);
    ctx.onProgress?.(tower, from + n, total);
  }
}

export const outputName = (tower: Tower): string => (tower === 'visual' ? IMAGE_OUTPUT : TEXT_OUTPUT);

/** Whether the settings keep `layer` in float32 whatever its drift. */
export const keptFp32 = (layer: string, s: Int8Settings): boolean =>
  s.finalProjections === 'fp32' && FINAL_PROJECTIONS.includes(layer);

export interface TowerCalibration {
  layers: Set<string>;
  record: Omit<TowerInt8Record, 'cosine_to_fp32' | 'demoted_by_check' | 'int8_layers' | 'fp32_layers'>;
  /** The weights to write the tower from: the model's, smoothed where `record.smoothed_layers`. */
  weights: WeightLookup;
  /** The float32 embeddings of the calibration set, [samples, embed_dim]. */
  reference: Float32Array;
}

/**
 * Per-channel input ranges of the LayerNorm-fed projections of `tower` over the calibration set (a
 * float32 pass), and the smoothed weights for those whose inputs carry outlier channels.
 */
async function smoothTower(
  ctx: CalibrationContext,
  tower: Tower,
): Promise<{ weights: WeightLookup; smoothed: string[] }> {
  const cfg = ctx.config.model_cfg;
  const layers = quantizableLayers(cfg, tower).filter((l) => smoothingSource(l));
  const onnxPath = path.join(ctx.scratchDir, `${tower}.ranges.onnx`);
  writeTowerModel({
    onnxPath,
    tower,
    config: cfg,
    weights: ctx.weights,
    precision: 'int8',
    int8: { layers: new Set(), inputRanges: true },
    producerVersion: ctx.producerVersion,
  });
  const ranges = new Map<string, Float32Array>();
  const session = await openSession(onnxPath, tower);
  try {
    await forEachBatch(
      ctx,
      tower,
      session,
      layers.map((l) => `${INPUT_ABSMAX_PREFIX}${l}`),
      (out) => {
        for (const l of layers) {
          const v = floats(out[`${INPUT_ABSMAX_PREFIX}${l}`]);
          const acc = ranges.get(l);
          if (!acc) ranges.set(l, v);
          else for (let j = 0; j < v.length; j++) acc[j] = Math.max(acc[j], v[j]);
        }
      },
    );
  } finally {
    await session.close();
    fs.rmSync(onnxPath, { force: true });
    fs.rmSync(`${onnxPath}.data`, { force: true });
  }
  const factors = new Map<string, Float32Array>();
  for (const l of layers) {
    const r = ranges.get(l)!;
    if (hasOutlierChannels(r))
      factors.set(l, smoothingFactors(l, r, ctx.weights(projectionWeight(l).key), ctx.settings.smoothing));
  }
  return { weights: factors.size ? smoothedWeights(ctx.weights, factors) : ctx.weights, smoothed: [...factors.keys()] };
}

/** Steps 1 and 2: measures each layer's drift and chooses the int8 layers of `tower` (after
 *  smoothing the layers with outlier input channels, when settings.smoothing > 0). */
export async function calibrateTower(ctx: CalibrationContext, tower: Tower): Promise<TowerCalibration> {
  const cfg = ctx.config.model_cfg;
  const layers = quantizableLayers(cfg, tower);
  const { weights, smoothed } =
    ctx.settings.smoothing > 0 ? await smoothTower(ctx, tower) : { weights: ctx.weights, smoothed: [] };
  const onnxPath = path.join(ctx.scratchDir, `${tower}.calibration.onnx`);
  writeTowerModel({
    onnxPath,
    tower,
    config: cfg,
    weights,
    precision: 'int8',
    int8: { layers: new Set(layers), calibrate: true, activations: ctx.settings.activations },
    producerVersion: ctx.producerVersion,
  });
  const err = new Float64Array(layers.length);
  const ref = new Float64Array(layers.length);
  const E = cfg.embed_dim;
  const reference = new Float32Array(ctx.set.captions.length * E);
  let filled = 0;
  const session = await openSession(onnxPath, tower);
  try {
    const outputs = [
      outputName(tower),
      ...layers.flatMap((l) => [`${DRIFT_ERR_PREFIX}${l}`, `${DRIFT_REF_PREFIX}${l}`]),
    ];
    await forEachBatch(ctx, tower, session, outputs, (out, n) => {
      layers.forEach((l, i) => {
        err[i] += floats(out[`${DRIFT_ERR_PREFIX}${l}`])[0];
        ref[i] += floats(out[`${DRIFT_REF_PREFIX}${l}`])[0];
      });
      reference.set(floats(out[outputName(tower)]).subarray(0, n * E), filled * E);
      filled += n;
    });
  } finally {
    await session.close();
    fs.rmSync(onnxPath, { force: true });
    fs.rmSync(`${onnxPath}.data`, { force: true });
  }
  const drift: Record<string, number> = {};
  const chosen = new Set<string>();
  layers.forEach((l, i) => {
    const d = ref[i] > 0 ? Math.sqrt(err[i] / ref[i]) : err[i] > 0 ? Infinity : 0;
    drift[l] = Number(d.toPrecision(4));
    if (d <= ctx.settings.maxDrift && !keptFp32(l, ctx.settings)) chosen.add(l);
  });
  return {
    layers: chosen,
    record: { drift, smoothed_layers: smoothed },
    weights,
    reference,
  };
}

/** Cosine of each row of `a` to the same row of `b` ([n, dim] each). */
export function rowCosines(a: Float32Array, b: Float32Array, dim: number): Float64Array {
  const n = a.length / dim;
  const out = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = r * dim; i < (r + 1) * dim; i++) {
      dot += a[i] * b[i];
      na += a[i] * a[i];
      nb += b[i] * b[i];
    }
    out[r] = na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : na === nb ? 1 : 0;
  }
  return out;
}

/** Mean and minimum, rounded to 6 decimals for the manifest. */
export function cosineSummary(c: Float64Array): { mean: number; min: number } {
  let sum = 0;
  let min = Infinity;
  for (const v of c) {
    sum += v;
    min = Math.min(min, v);
  }
  return { mean: Number((sum / c.length).toFixed(6)), min: Number(min.toFixed(6)) };
}

/** Step 3: the cosine of the written int8 tower's embeddings to the float32 reference. */
export async function checkTower(
  ctx: CalibrationContext,
  tower: Tower,
  onnxPath: string,
  reference: Float32Array,
): Promise<{ mean: number; min: number }> {
  const E = ctx.config.model_cfg.embed_dim;
  const got = new Float32Array(reference.length);
  let filled = 0;
  const session = await openSession(onnxPath, tower);
  try {
    await forEachBatch(ctx, tower, session, [outputName(tower)], (out, n) => {
      got.set(floats(out[outputName(tower)]).subarray(0, n * E), filled * E);
      filled += n;
    });
  } finally {
    await session.close();
  }
  return cosineSummary(rowCosines(got, reference, E));
}
