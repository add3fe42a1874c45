/**
 * Which int8 layers to move back to float32 when a tower misses the end-to-end contract. A
 * layer's local drift does not say what it does to the embedding: on the fine-tuned icon model
 * every projection drifted ~1 % locally, yet the twelve attention output projections made 60 % of
 * the image embedding's error and the first two text blocks half of the text embedding's
 * (docs/int8.md). So each candidate is measured end to end: the tower written with only that layer
 * in int8, run over a few calibration samples, 1 − cosine of each embedding to float32. These
 * errors add up (the sum over layers predicted the all-int8 error within 10 % there), which turns
 * the choice into a knapsack: move back the layers with the most error per multiply-add until the
 * predicted error meets the contract.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from './config';
import { writeTowerModel, type Tower } from '../onnx/write-model';
import type { WeightLookup } from '../onnx/clip-graph';
import {
  floats,
  forEachBatch,
  openSession,
  outputName,
  rowCosines,
  type CalibrationContext,
  type Int8Settings,
} from './int8';

/** Per layer, the per-sample error (1 − cosine to float32) of the tower with only that layer in int8. */
export type LayerErrors = Map<string, Float64Array>;

export async function measureLayerErrors(
  ctx: CalibrationContext,
  tower: Tower,
  layers: readonly string[],
  weights: WeightLookup,
  reference: Float32Array,
): Promise<LayerErrors> {
  const E = ctx.config.model_cfg.embed_dim;
  const n = Math.min(ctx.settings.sensitivitySamples, ctx.set.captions.length);
  const out: LayerErrors = new Map();
  const onnxPath = path.join(ctx.scratchDir, `${tower}.sensitivity.onnx`);
  try {
    for (const [i, layer] of layers.entries()) {
      writeTowerModel({
        onnxPath,
        tower,
        config: ctx.config.model_cfg,
        weights,
        precision: 'int8',
        int8: { layers: new Set([layer]), activations: ctx.settings.activations, kernel: ctx.settings.kernel },
        producerVersion: ctx.producerVersion,
      });
      const got = new Float32Array(n * E);
      let filled = 0;
      const session = await openSession(onnxPath, tower);
      try {
        await forEachBatch(
          { ...ctx, onProgress: undefined },
          tower,
          session,
          [outputName(tower)],
          (o, m) => {
            got.set(floats(o[outputName(tower)]).subarray(0, m * E), filled * E);
            filled += m;
          },
          n,
        );
      } finally {
        await session.close();
      }
      out.set(
        layer,
        rowCosines(got, reference.subarray(0, n * E), E).map((c) => 1 - c),
      );
      ctx.onProgress?.(tower, i + 1, layers.length); // in layers measured
    }
  } finally {
    fs.rmSync(onnxPath, { force: true });
    fs.rmSync(`${onnxPath}.data`, { force: true });
  }
  return out;
}

/** Multiply-adds per sample of `layer`: its weight's size times the rows it multiplies (every token
 *  for the block projections, the one pooled row for the final projection). */
export function layerCost(cfg: ModelConfig, tower: Tower, layer: string): number {
  const [width, tokens] =
    tower === 'visual'
      ? [cfg.vision_cfg.width, (cfg.vision_cfg.image_size / cfg.vision_cfg.patch_size) ** 2 + 1]
      : [cfg.text_cfg.width, cfg.text_cfg.context_length];
  const mlp = width * (tower === 'visual' ? cfg.vision_cfg.mlp_ratio : cfg.text_cfg.mlp_ratio);
  if (layer.endsWith('attn.in_proj')) return tokens * width * 3 * width;
  if (layer.endsWith('attn.out_proj')) return tokens * width * width;
  if (layer.endsWith('mlp.c_fc') || layer.endsWith('mlp.c_proj')) return tokens * width * mlp;
  return width * cfg.embed_dim; // visual.proj, text_projection
}

const mean = (v: Float64Array): number => v.reduce((a, b) => a + b, 0) / v.length;

/** What the manifest records: each measured layer's mean error, 4 significant digits. */
export function errorRecord(errors: LayerErrors): { sensitivity: Record<string, number>; sensitivity_samples: number } {
  return {
    sensitivity: Object.fromEntries([...errors].map(([l, e]) => [l, Number(mean(e).toPrecision(4))])),
    sensitivity_samples: [...errors.values()][0]?.length ?? 0,
  };
}

/** Mean error per multiply-add of each measured layer: the order in which they go back to float32. */
export function errorPerCost(cfg: ModelConfig, tower: Tower, errors: LayerErrors): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [l, e] of errors) out[l] = mean(e) / layerCost(cfg, tower, l);
  return out;
}

/** Headroom left below the contract's bounds: the measurement runs on a subset of the check's
 *  samples, and the errors add up only nearly. */
const MARGIN = 0.8;

/**
 * `layers` less those that must go back to float32 for the predicted per-sample error (the sum of
 * the int8 layers' measured errors) to meet the contract with margin, taken in order of error per
 * multiply-add. Layers without a measurement stay as they are.
 */
export function demoteByErrors(
  layers: ReadonlySet<string>,
  errors: LayerErrors,
  score: Record<string, number>,
  s: Pick<Int8Settings, 'minMeanCosine' | 'minCosine'>,
): Set<string> {
  const kept = new Set(layers);
  const n = [...errors.values()][0]?.length ?? 0;
  const predicted = new Float64Array(n);
  for (const [l, e] of errors) if (kept.has(l)) e.forEach((v, i) => (predicted[i] += v));
  const meets = () =>
    mean(predicted) <= MARGIN * (1 - s.minMeanCosine) && Math.max(...predicted) <= MARGIN * (1 - s.minCosine);
  const order = [...errors.keys()].filter((l) => kept.has(l)).sort((a, b) => score[b] - score[a]);
  for (const l of order) {
    if (n === 0 || meets()) break;
    kept.delete(l);
    errors.get(l)!.forEach((v, i) => (predicted[i] -= v));
  }
  return kept;
}
