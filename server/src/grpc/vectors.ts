/**
 * The wire form of an embedding (repeated float or little-endian float32 bytes). The head math
 * (normalize, logits, softmax) is inference/heads.ts.
 */
import * as os from 'node:os';
import type { EmbeddingFormatName, EmbeddingMsg } from './messages';

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
