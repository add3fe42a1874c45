/**
 * The 8-bit separable resize of ../resample.ts (`resizeSeparable` for 8-bit images) on
 * the WebAssembly SIMD passes of kernels.wat (h8, v8, premultiply4). Same coefficients (the
 * TypeScript `axisCoefficients`), same pass order and skips, same uint8 intermediate: only the arithmetic of
 * the two passes moves into the kernel, where four bands (or sixteen samples) go per instruction.
 * The TypeScript passes stay the reference; test/unit/preprocess/simd.test.ts holds the two equal.
 *
 * The source is fed to the horizontal pass in strips of rows copied (and for RGBA premultiplied)
 * into the module's memory, so the memory holds a strip, the horizontal output of the rows the
 * vertical pass needs, and the window: bounded by the crop, not by the input size. One instance
 * per thread (each preprocessing worker has its own); its memory grows to the largest job seen.
 */
import {
  axisCoefficients,
  premultiplyInto,
  rowSpan,
  unpremultiply,
  type AxisCoefficients,
  type ResampleFilter,
  type Window,
} from '../resample';
import { Arena, simdKernels, type Kernels } from './instance';

/** Source bytes copied per horizontal strip (about L2-sized). */
const STRIP_BYTES = 256 * 1024;

/** Whether resizeSeparableSimd can run (8-bit samples of 1 to 4 bands). */
export function simdResampleAvailable(): boolean {
  return simdKernels() !== null;
}

interface PlacedAxis {
  start: number;
  taps: number;
  k: number;
  ksize: number;
}

function reserveAxis(arena: Arena, c: AxisCoefficients): PlacedAxis {
  return {
    start: arena.alloc(4 * c.count),
    taps: arena.alloc(4 * c.count),
    k: arena.alloc(4 * c.fixed.length),
    ksize: c.ksize,
  };
}

/** Writes the taps with their start made relative to `origin` (the first index held in memory). */
function writeAxis(i32: Int32Array, at: PlacedAxis, c: AxisCoefficients, origin: number): void {
  for (let i = 0; i < c.count; i++) i32[(at.start >> 2) + i] = c.start[i] - origin;
  i32.set(c.taps, at.taps >> 2);
  i32.set(c.fixed, at.k >> 2);
}

interface PlacedPairs {
  start: number;
  pairs: number;
  k: number;
  maxPairs: number;
}

function reservePairs(arena: Arena, c: AxisCoefficients): PlacedPairs {
  const maxPairs = (c.ksize + 1) >> 1;
  return {
    start: arena.alloc(4 * c.count),
    pairs: arena.alloc(4 * c.count),
    k: arena.alloc(8 * c.count * maxPairs),
    maxPairs,
  };
}

/** The horizontal taps as h8 reads them: per pair of taps, the i16 high parts (w >> 11) of both
 *  weights in one word and the low parts (w & 2047) in the next; an odd last tap pairs with 0. */
function writePairs(i32: Int32Array, at: PlacedPairs, c: AxisCoefficients, origin: number): void {
  for (let i = 0; i < c.count; i++) {
    const taps = c.taps[i];
    const pairs = (taps + 1) >> 1;
    i32[(at.start >> 2) + i] = c.start[i] - origin;
    i32[(at.pairs >> 2) + i] = pairs;
    let o = (at.k >> 2) + i * at.maxPairs * 2;
    for (let t = 0; t < taps; t += 2, o += 2) {
      const w0 = c.fixed[i * c.ksize + t];
      const w1 = t + 1 < taps ? c.fixed[i * c.ksize + t + 1] : 0;
      i32[o] = ((w0 >> 11) & 0xffff) | ((w1 >> 11) << 16);
      i32[o + 1] = (w0 & 2047) | ((w1 & 2047) << 16);
    }
  }
}

/** Copies source rows [y0, y0+n), columns [x0, x0+cols), into memory at `dst` (rows packed) in
 *  the kernel's layout, then premultiplies alpha there when asked. Grey sources (srcCh 1 or 2)
 *  are spread to L,L,L(,A): every band of RGB(A) resamples exactly as the grey band would. */
function copyRows(
  k: Kernels,
  mem: Uint8Array,
  dst: number,
  src: Uint8Array,
  w: number,
  srcCh: number,
  ch: number,
  x0: number,
  cols: number,
  y0: number,
  n: number,
  premultiply: boolean,
): void {
  const rowBytes = cols * ch;
  if (srcCh !== ch) {
    for (let r = 0; r < n; r++) {
      let s = ((y0 + r) * w + x0) * srcCh;
      let d = dst + r * rowBytes;
      for (let x = 0; x < cols; x++, s += srcCh, d += ch) {
        const v = src[s];
        mem[d] = v;
        mem[d + 1] = v;
        mem[d + 2] = v;
        if (ch === 4) mem[d + 3] = src[s + 1];
      }
    }
  } else if (cols === w) {
    mem.set(src.subarray(y0 * w * ch, (y0 + n) * w * ch), dst);
  } else {
    for (let r = 0; r < n; r++) {
      const s = ((y0 + r) * w + x0) * ch;
      mem.set(src.subarray(s, s + rowBytes), dst + r * rowBytes);
    }
  }
  if (premultiply) {
    if (ch === 4) k.premultiply4(dst, n * rowBytes);
    else premultiplyInto(mem, dst, mem, dst, n * rowBytes, ch);
  }
}

/** The grey bands (0, and alpha for LA) of an L,L,L / L,L,L,A image. */
function keepGrey(data: Uint8Array, ch: number, srcCh: number): Uint8Array {
  const n = data.length / ch;
  const out = new Uint8Array(n * srcCh);
  for (let p = 0, s = 0, o = 0; p < n; p++, s += ch, o += srcCh) {
    out[o] = data[s];
    if (srcCh === 2) out[o + 1] = data[s + 3];
  }
  return out;
}

/**
 * `resizeSeparable` of ../resample.ts for an 8-bit image of 1 to 4 bands (L, LA, RGB, RGBA,
 * CMYK; check simdResampleAvailable first): outW×outH, window `win` only, alpha premultiplied
 * around the passes when asked. Grey images run as L,L,L(,A) and come back in their own bands.
 */
export function resizeSeparableSimd(
  src: Uint8Array,
  w: number,
  h: number,
  srcCh: 1 | 2 | 3 | 4,
  outW: number,
  outH: number,
  win: Window,
  filter: ResampleFilter,
  premultiplyAlpha = false,
  region?: { x: number; y: number; width: number },
): Uint8Array {
  // `src` holds the whole w×h image, or only `region` of it (rows of region.width pixels from
  // (region.x, region.y)): the rows and columns copied below are read relative to it.
  const ox = region?.x ?? 0;
  const oy = region?.y ?? 0;
  const stride = region?.width ?? w;
  const ch = srcCh === 1 ? 3 : srcCh === 2 ? 4 : srcCh;
  const k = simdKernels();
  if (!k) throw new Error('WebAssembly SIMD resample is not available in this runtime');
  const needH = outW !== w;
  const needV = outH !== h;
  const cv = needV ? axisCoefficients(h, outH, filter, win.y0, win.h) : undefined;
  const [row0, row1] = cv ? rowSpan(cv) : [win.y0, win.y0 + win.h];
  const rows = row1 - row0;
  const chh = needH ? axisCoefficients(w, outW, filter, win.x0, win.w) : undefined;
  // Source columns the horizontal taps read (or the window's own columns without that pass).
  const [col0, col1] = chh ? rowSpan(chh) : [win.x0, win.x0 + win.w];
  const cols = col1 - col0;
  const rowLen = win.w * ch;

  const arena = new Arena();
  const ah = chh ? reservePairs(arena, chh) : undefined;
  const av = cv ? reserveAxis(arena, cv) : undefined;
  const stripRows = Math.max(1, Math.min(rows, Math.floor(STRIP_BYTES / (cols * ch))));
  const strip = chh ? arena.alloc(stripRows * cols * ch) : 0;
  const tmp = arena.alloc(rows * rowLen);
  const out = cv ? arena.alloc(win.h * rowLen) : tmp;
  arena.commit(k.memory);
  const mem = new Uint8Array(k.memory.buffer);
  const i32 = new Int32Array(k.memory.buffer);
  if (ah && chh) writePairs(i32, ah, chh, col0);
  if (av && cv) writeAxis(i32, av, cv, row0);

  if (ah && chh) {
    for (let y = 0; y < rows; y += stripRows) {
      const n = Math.min(stripRows, rows - y);
      copyRows(k, mem, strip, src, stride, srcCh, ch, col0 - ox, cols, row0 + y - oy, n, premultiplyAlpha);
      k.h8(strip, cols * ch, n, ch, tmp + y * rowLen, win.w, ah.start, ah.pairs, ah.k, ah.maxPairs);
    }
  } else {
    copyRows(k, mem, tmp, src, stride, srcCh, ch, col0 - ox, cols, row0 - oy, rows, premultiplyAlpha);
  }
  if (av && cv) k.v8(tmp, rowLen, out, win.h, av.start, av.taps, av.k, av.ksize);
  const result = mem.slice(out, out + win.h * rowLen);
  if (premultiplyAlpha) unpremultiply(result, ch);
  return srcCh === ch ? result : keepGrey(result, ch, srcCh);
}
