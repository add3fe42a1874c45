/**
 * CLIP's head math, once, as open_clip computes it: F.normalize, CLIP.get_logits, softmax, the
 * zero-shot classifier (build_zero_shot_classifier) and ranking by cosine. Row-wise forms work on
 * flat n × dim feature arrays (the runtime's output); vector forms on one embedding each (what the
 * batchers return). Products are accumulated in float64 and rounded once to float32. The gRPC and
 * HTTP handlers (grpc/clip-tasks.ts), eval and the CLI call it; nothing here knows a transport.
 */

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
export function similarityLogits(
  img: Float32Array,
  txt: Float32Array,
  dim: number,
  logitScale: number,
): { logitsPerImage: Float32Array; logitsPerText: Float32Array } {
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

/** x / max(‖x‖₂, 1e-12) of one vector, as torch.nn.functional.normalize (what open_clip uses). */
export function l2normalized(v: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] * v[i];
  const inv = 1 / Math.max(Math.sqrt(sum), 1e-12);
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] * inv;
  return out;
}

export function dot(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`dot of vectors of length ${a.length} and ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Numerically stable softmax. */
export function softmax(logits: readonly number[]): number[] {
  if (logits.length === 0) return [];
  const max = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - max));
  const total = exps.reduce((s, x) => s + x, 0);
  return exps.map((x) => x / total);
}

/** Element-wise mean of equal-length vectors. */
export function mean(vectors: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(vectors[0].length);
  const acc = new Float64Array(out.length);
  for (const v of vectors) for (let i = 0; i < v.length; i++) acc[i] += v[i];
  for (let i = 0; i < out.length; i++) out[i] = acc[i] / vectors.length;
  return out;
}

/** model(image, text) over raw embeddings: logits_per_image = logitScale · img @ txt.T, its transpose, and softmax per image. */
export function imageTextLogits(
  images: readonly Float32Array[],
  texts: readonly Float32Array[],
  logitScale: number,
): { logitsPerImage: number[][]; logitsPerText: number[][]; probs: number[][] } {
  const img = images.map((v) => l2normalized(v));
  const txt = texts.map((v) => l2normalized(v));
  const logits = img.map((i) => txt.map((t) => logitScale * dot(i, t)));
  return {
    logitsPerImage: logits,
    logitsPerText: txt.map((_, j) => logits.map((row) => row[j])),
    probs: logits.map((row) => softmax(row)),
  };
}

export interface RankedItem<T> {
  item: T;
  /** Cosine similarity to the query. */
  score: number;
  logit: number;
  /** Softmax of the logits over all candidates (before any top-k). */
  probability: number;
}

/** Candidates (raw embeddings) by cosine to the query, best first; equal scores keep input order. */
export function rankByCosine<T>(
  query: Float32Array,
  candidates: readonly { item: T; vector: Float32Array }[],
  logitScale: number,
): RankedItem<T>[] {
  const q = l2normalized(query);
  const scores = candidates.map((c) => dot(q, l2normalized(c.vector)));
  const logits = scores.map((s) => logitScale * s);
  const probs = softmax(logits);
  const ranked = candidates.map((c, k) => ({
    item: c.item,
    score: scores[k],
    logit: logits[k],
    probability: probs[k],
    order: k,
  }));
  ranked.sort((a, b) => b.score - a.score || a.order - b.order);
  return ranked.map(({ item, score, logit, probability }) => ({ item, score, logit, probability }));
}

/**
 * open_clip build_zero_shot_classifier: per class, normalize each template embedding, average
 * them, normalize the mean. `promptEmbeddings` holds the classes' templates one class after another.
 */
export function zeroShotClassifier(
  promptEmbeddings: readonly Float32Array[],
  templatesPerClass: number,
): Float32Array[] {
  const classes = promptEmbeddings.length / templatesPerClass;
  return Array.from({ length: classes }, (_, c) =>
    l2normalized(
      mean(promptEmbeddings.slice(c * templatesPerClass, (c + 1) * templatesPerClass).map((p) => l2normalized(p))),
    ),
  );
}

/** One image's logits and probabilities over the classes of a zero-shot classifier. */
export function classifyImage(
  image: Float32Array,
  classWeights: readonly Float32Array[],
  logitScale: number,
): { logits: number[]; probs: number[] } {
  const img = l2normalized(image);
  const logits = classWeights.map((w) => logitScale * dot(img, w));
  return { logits, probs: softmax(logits) };
}
