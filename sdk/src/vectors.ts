/** Embedding decoding and small vector helpers. */
import type { WireEmbedding } from './wire.js';

/**
 * The vector of one Embedding. The client asks for EMBEDDING_FORMAT_F32LE_BYTES (4 bytes per
 * value, little-endian); the bytes are copied once into an aligned Float32Array, since the
 * protobuf buffer's offset need not be a multiple of 4 and the result outlives the message.
 */
export function decodeEmbedding(e: WireEmbedding, dim: number): Float32Array {
  const bytes = e.valuesF32le;
  if (bytes && bytes.length > 0) {
    if (bytes.length % 4 !== 0) throw new Error(`embedding has ${bytes.length} bytes, not a multiple of 4`);
    const out = new Float32Array(bytes.length / 4);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
    checkDim(out.length, dim);
    return out;
  }
  const out = Float32Array.from(e.values ?? []);
  checkDim(out.length, dim);
  return out;
}

function checkDim(n: number, dim: number): void {
  if (dim > 0 && n !== dim) throw new Error(`embedding has ${n} values, the response says dim ${dim}`);
}

/** Cosine similarity of two vectors (no normalization assumed). */
export function cosine(a: Float32Array | number[], b: Float32Array | number[]): number {
  if (a.length !== b.length) throw new RangeError(`vectors differ in length (${a.length} vs ${b.length})`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}
