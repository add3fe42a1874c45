/** Feature post-processing that matches open_clip: F.normalize and CLIP.get_logits. */

/** Row-wise x / max(‖x‖₂, 1e-12), as torch.nn.functional.normalize(dim=-1). */
export function l2normalize(features: Float32Array, dim: number): Float32Array {
  if (!Number.isInteger(dim) || dim <= 0 || features.length % dim !== 0) {
    throw new RangeError(`features of length ${features.length} are not rows of dimension ${dim}`);
  }
  const out = new Float32Array(features.length);
  for (let r = 0; r < features.length; r += dim) {
    let ss = 0;
    for (let i = r; i < r + dim; i++) ss += features[i] * features[i];
    const denom = Math.max(Math.sqrt(ss), 1e-12);
    for (let i = r; i < r + dim; i++) out[i] = features[i] / denom;
  }
  return out;
}

/**
 * logits_per_image = logitScale · normalize(img) @ normalize(txt)ᵀ and logits_per_text, its
 * transpose. Inputs are raw features; `logitScale` is the exp'd scale (manifest logit_scale_exp).
 */
export function similarityLogits(img: Float32Array, txt: Float32Array, dim: number, logitScale: number): { logitsPerImage: Float32Array; logitsPerText: Float32Array } {
  const a = l2normalize(img, dim);
  const b = l2normalize(txt, dim);
  const ni = a.length / dim;
  const nt = b.length / dim;
  const logitsPerImage = new Float32Array(ni * nt);
  const logitsPerText = new Float32Array(nt * ni);
  for (let i = 0; i < ni; i++) {
    for (let j = 0; j < nt; j++) {
      let dot = 0;
      for (let k = 0; k < dim; k++) dot += a[i * dim + k] * b[j * dim + k];
      const v = logitScale * dot;
      logitsPerImage[i * nt + j] = v;
      logitsPerText[j * ni + i] = v;
    }
  }
  return { logitsPerImage, logitsPerText };
}
