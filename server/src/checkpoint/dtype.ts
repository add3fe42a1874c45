/**
 * Element types that checkpoints store weights in, and their conversion to float32. StateDict is
 * fp32 only, so half-precision checkpoints are widened exactly here (every fp16 and bf16 value is
 * representable in fp32, so the conversion is lossless).
 */
import * as os from 'node:os';
import { CheckpointError } from './errors';

/** Little-endian hosts (all that Node ships for) can copy F32 bytes straight into a Float32Array. */
const HOST_IS_LE = os.endianness() === 'LE';

export type WeightDType = 'F32' | 'F16' | 'BF16' | 'F64';

export const BYTES_PER_ELEMENT: Record<WeightDType, number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };

/** IEEE-754 binary16 → number (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero and subnormals
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Converts `count` little-endian elements of `dtype` from `src` (starting at byte `srcOffset`) into
 * `dst` starting at element `dstOffset`.
 */
export function decodeToF32(
  dtype: WeightDType,
  src: Uint8Array,
  srcOffset: number,
  count: number,
  dst: Float32Array,
  dstOffset = 0,
): void {
  const need = count * BYTES_PER_ELEMENT[dtype];
  if (srcOffset + need > src.byteLength) {
    throw new CheckpointError(
      `tensor data is truncated: need ${need} bytes at offset ${srcOffset}, have ${src.byteLength - srcOffset}`,
    );
  }
  const view = new DataView(src.buffer, src.byteOffset + srcOffset, need);
  switch (dtype) {
    case 'F32':
      if (HOST_IS_LE) {
        new Uint8Array(dst.buffer, dst.byteOffset + dstOffset * 4, need).set(src.subarray(srcOffset, srcOffset + need));
        return;
      }
      for (let i = 0; i < count; i++) dst[dstOffset + i] = view.getFloat32(i * 4, true);
      return;
    case 'F64':
      for (let i = 0; i < count; i++) dst[dstOffset + i] = view.getFloat64(i * 8, true);
      return;
    case 'F16':
      for (let i = 0; i < count; i++) dst[dstOffset + i] = halfToFloat(view.getUint16(i * 2, true));
      return;
    case 'BF16': {
      // bf16 is the upper half of an fp32 bit pattern.
      const bits = new Uint32Array(1);
      const asFloat = new Float32Array(bits.buffer);
      for (let i = 0; i < count; i++) {
        bits[0] = view.getUint16(i * 2, true) << 16;
        dst[dstOffset + i] = asFloat[0];
      }
      return;
    }
  }
}
