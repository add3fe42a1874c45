/**
 * The small vector math of the CLIP heads (normalize, cosine, logits, softmax) and the wire form
 * of an embedding. Products are accumulated in float64 and rounded once to float32 on the wire.
 */
import * as os from 'node:os';
import type { EmbeddingFormatName, EmbeddingMsg } from './messages';

/** x / max(‖x‖₂, 1e-12), as torch.nn.functional.normalize (what open_clip uses). */
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

const LITTLE_ENDIAN = os.endianness() === 'LE';

/** The Embedding message for `v` in the requested wire format. */
export function embeddingMessage(v: Float32Array, format: EmbeddingFormatName, truncated = false): EmbeddingMsg {
  if (format === 'EMBEDDING_FORMAT_F32LE_BYTES') {
    const bytes = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    return { valuesF32le: LITTLE_ENDIAN ? Buffer.from(bytes) : swap32(bytes), truncated };
  }
  return { values: Array.from(v), truncated };
}

function swap32(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  out.swap32();
  return out;
}
