/**
 * SmoothQuant-style smoothing for the int8 converter (Xiao et al. 2023, "SmoothQuant"): a few
 * input channels of a projection far larger than the rest stretch every per-token activation scale,
 * so the other channels of each token round to a few levels. For a projection fed only by a
 * LayerNorm (../onnx/clip-graph `smoothingSource`), dividing the LayerNorm's gain and bias of channel
 * j by s_j and multiplying row j of the weight ([in, out]) by s_j computes the same function and
 * moves the outlier into the weight, whose scales are per output channel:
 *
 *   s_j = max|x_j|^α / max_n |W[j, n]|^(1−α)      (α = migration strength, 0.5 in the paper)
 *
 * Only layers whose calibration inputs do have outlier channels are smoothed (largest channel range
 * at least OUTLIER_RATIO × the median one): elsewhere smoothing only coarsens the weight scales.
 */
import { projectionWeight, smoothingSource, type WeightLookup } from '../onnx/clip-graph';
import type { WeightTensor } from './state-dict';

/** A layer's largest input channel range over its median one from which it is smoothed. */
export const OUTLIER_RATIO = 8;

function median(v: Float32Array): number {
  const s = Float32Array.from(v).sort();
  return s[Math.floor(s.length / 2)];
}

/** Whether a layer's per-channel input ranges carry outlier channels worth smoothing. */
export function hasOutlierChannels(inputAbsMax: Float32Array): boolean {
  const m = median(inputAbsMax);
  let max = 0;
  for (const v of inputAbsMax) max = Math.max(max, v);
  return m > 0 && max >= OUTLIER_RATIO * m;
}

/** Largest |W[j, n]| of each input row j of projection `layer`'s weight, in its [in, out] view. */
function weightRowAbsMax(layer: string, t: WeightTensor): Float32Array {
  const { transposed } = projectionWeight(layer);
  const [a, b] = t.shape;
  const rows = transposed ? b : a;
  const out = new Float32Array(rows);
  for (let i = 0; i < a; i++) {
    for (let k = 0; k < b; k++) {
      const j = transposed ? k : i; // stored [out, in] when transposed, else [in, out]
      const v = Math.abs(t.data[i * b + k]);
      if (v > out[j]) out[j] = v;
    }
  }
  return out;
}

/** The smoothing factors s_j of `layer` from its calibration input ranges; 1 where undefined. */
export function smoothingFactors(
  layer: string,
  inputAbsMax: Float32Array,
  weight: WeightTensor,
  alpha: number,
): Float32Array {
  const w = weightRowAbsMax(layer, weight);
  if (w.length !== inputAbsMax.length)
    throw new Error(`smoothing ${layer}: ${inputAbsMax.length} input ranges for ${w.length} weight rows`);
  return inputAbsMax.map((x, j) => {
    const s = x > 0 && w[j] > 0 ? x ** alpha / w[j] ** (1 - alpha) : 1;
    return Number.isFinite(s) ? Math.min(1e4, Math.max(1e-4, s)) : 1;
  });
}

/**
 * `get` with the smoothing of each layer in `factors` applied: its LayerNorm's weight and bias
 * divided by s, its projection weight's input rows multiplied by s. Computed on each lookup (the
 * graph writer asks for a weight once or twice), so no second copy of the model stays in memory.
 */
export function smoothedWeights(get: WeightLookup, factors: ReadonlyMap<string, Float32Array>): WeightLookup {
  const byKey = new Map<string, { layer: string; kind: 'ln' | 'weight' }>();
  for (const layer of factors.keys()) {
    const ln = smoothingSource(layer);
    if (!ln) throw new Error(`${layer} is not fed by a LayerNorm alone; it cannot be smoothed`);
    byKey.set(`${ln}.weight`, { layer, kind: 'ln' });
    byKey.set(`${ln}.bias`, { layer, kind: 'ln' });
    byKey.set(projectionWeight(layer).key, { layer, kind: 'weight' });
  }
  return (key: string): WeightTensor => {
    const t = get(key);
    const hit = byKey.get(key);
    if (!hit) return t;
    const s = factors.get(hit.layer)!;
    if (hit.kind === 'ln') return { shape: t.shape, data: t.data.map((v, j) => v / s[j]) };
    const { transposed } = projectionWeight(hit.layer);
    const cols = t.shape[1];
    // [out, in] (transposed): scale column j; [in, out]: scale row j.
    return { shape: t.shape, data: t.data.map((v, i) => v * s[transposed ? i % cols : Math.floor(i / cols)]) };
  };
}
