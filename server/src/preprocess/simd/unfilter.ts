/**
 * PNG row unfiltering for 3 and 4 bytes per pixel (RGB, RGBA) on the `unfilter` kernel of
 * kernels.wat; ../png-decode.ts `unfilter` is the TypeScript reference it is tested against.
 */
import { Arena, simdKernels } from './instance';

/** Whether unfilterSimd can run for `bpp` bytes per pixel. */
export function simdUnfilterAvailable(bpp: number): boolean {
  return (bpp === 3 || bpp === 4) && simdKernels() !== null;
}

/** `raw`: height rows of [filter type, rowBytes bytes]. The packed image, or null on an invalid
 *  filter type. */
export function unfilterSimd(raw: Uint8Array, height: number, rowBytes: number, bpp: 3 | 4): Uint8Array | null {
  const k = simdKernels();
  if (!k) throw new Error('WebAssembly SIMD unfilter is not available in this runtime');
  const arena = new Arena();
  const src = arena.alloc(raw.length);
  const zeroRow = arena.alloc(rowBytes); // the row "above" the first, all zeros
  const out = arena.alloc(height * rowBytes);
  arena.commit(k.memory);
  const mem = new Uint8Array(k.memory.buffer);
  mem.set(raw, src);
  // The kernel reads rowBytes + 16 bytes before `out`: the end of zeroRow and its slack.
  mem.fill(0, zeroRow, out);
  if (k.unfilter(src, out, height, rowBytes, bpp) !== 0) return null;
  return mem.slice(out, out + height * rowBytes);
}
