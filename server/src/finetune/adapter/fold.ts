/**
 * Folds trained adapters into a model's projections, so the result is an ordinary bundle.
 * Features f = Pᵀ h (open_clip: x @ proj, proj is [width, embed_dim]); the adapter gives
 * g = f + W f = (I + W) Pᵀ h, i.e. the new projection P' = P (I + W)ᵀ:
 *   P'[r, j] = P[r, j] + Σ_k P[r, k] · W[j, k]
 */
import type { StateDict } from '../../model/state-dict';

export const PROJECTION_KEYS = { image: 'visual.proj', text: 'text_projection' } as const;

export function foldProjection(p: Float32Array, width: number, d: number, w: Float64Array): Float32Array {
  if (p.length !== width * d) throw new Error(`projection has ${p.length} values, expected ${width}×${d}`);
  if (w.length !== d * d) throw new Error(`adapter has ${w.length} values, expected ${d}×${d}`);
  const out = new Float32Array(p.length);
  for (let r = 0; r < width; r++) {
    const ro = r * d;
    for (let j = 0; j < d; j++) {
      let acc = p[ro + j];
      const wo = j * d;
      for (let k = 0; k < d; k++) acc += p[ro + k] * w[wo + k];
      out[ro + j] = acc;
    }
  }
  return out;
}

/** A copy of `sd` (sharing every tensor but the two projections) with both adapters folded in. */
export function foldAdapters(sd: StateDict, wImage: Float64Array, wText: Float64Array): StateDict {
  const out: StateDict = new Map(sd);
  for (const [key, w] of [
    [PROJECTION_KEYS.image, wImage],
    [PROJECTION_KEYS.text, wText],
  ] as const) {
    const t = sd.get(key);
    if (!t || t.shape.length !== 2) throw new Error(`state dict has no 2-D ${key}`);
    out.set(key, { shape: [...t.shape], data: foldProjection(t.data, t.shape[0], t.shape[1], w) });
  }
  return out;
}
