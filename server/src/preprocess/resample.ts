/**
 * Pillow 9.4's `Image.resize` (libImaging/Resample.c and the NEAREST affine path of Geometry.c),
 * reproduced bit for bit, but computed only over a window of the output: the centre crop that
 * follows keeps a fixed-size window, and every output pixel depends on its own coefficients
 * alone, so skipping the pixels the crop throws away changes nothing and bounds the work and
 * memory by the crop size even for extreme aspect ratios.
 */

export type ResampleFilter = 'bicubic' | 'bilinear';

/** Fixed-point precision of Pillow's 8-bit passes (32 - 8 - 2). */
const PRECISION_BITS = 22;
const HALF = 1 << (PRECISION_BITS - 1);
const ONE = 1 << PRECISION_BITS;

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

function bilinear(x: number): number {
  if (x < 0) x = -x;
  if (x < 1) return 1 - x;
  return 0;
}

const FILTERS: Record<ResampleFilter, { fn: (x: number) => number; support: number }> = {
  bicubic: { fn: bicubic, support: 2.0 },
  bilinear: { fn: bilinear, support: 1.0 },
};

/** Per-output-index taps for one axis: source start, tap count, `ksize` weights per index. */
export interface AxisCoefficients {
  count: number;
  ksize: number;
  start: Int32Array;
  taps: Int32Array;
  weights: Float64Array;
  /** `weights` in Pillow's 8-bit fixed point. */
  fixed: Int32Array;
}

/**
 * Pillow `precompute_coeffs` for output indices [first, first + count) of an
 * `inSize → outSize` resize (float64, evaluated in Pillow's operation order), plus
 * `normalize_coeffs_8bpc`.
 */
export function axisCoefficients(
  inSize: number,
  outSize: number,
  filter: ResampleFilter,
  first: number,
  count: number,
): AxisCoefficients {
  const { fn, support: baseSupport } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = baseSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const ss = 1.0 / filterscale;
  const start = new Int32Array(count);
  const taps = new Int32Array(count);
  const weights = new Float64Array(count * ksize);
  const fixed = new Int32Array(count * ksize);
  for (let i = 0; i < count; i++) {
    const xx = first + i;
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const off = i * ksize;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = fn((x + xmin - center + 0.5) * ss);
      weights[off + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      if (ww !== 0.0) weights[off + x] /= ww;
      const k = weights[off + x];
      fixed[off + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    start[i] = xmin;
    taps[i] = xmax;
  }
  return { count, ksize, start, taps, weights, fixed };
}

/** Pillow's NEAREST source indices for output indices [first, first + count): the position is
 *  accumulated in float64 from index 0 exactly as ImagingScaleAffine does. */
export function nearestIndices(inSize: number, outSize: number, first: number, count: number): Int32Array {
  const s = inSize / outSize;
  const idx = new Int32Array(count);
  let pos = s * 0.5;
  for (let x = 0; x < first + count; x++) {
    if (x >= first) {
      const v = pos < 0 ? 0 : Math.trunc(pos);
      idx[x - first] = v < inSize ? v : inSize - 1;
    }
    pos += s;
  }
  return idx;
}

/** Source indices that the taps of `c` read: [first, end). */
export function rowSpan(c: AxisCoefficients): [number, number] {
  let lo = Infinity;
  let hi = 0;
  for (let i = 0; i < c.count; i++) {
    if (c.start[i] < lo) lo = c.start[i];
    if (c.start[i] + c.taps[i] > hi) hi = c.start[i] + c.taps[i];
  }
  return [lo === Infinity ? 0 : lo, hi];
}

/** Horizontal 8-bit pass over `rows` source rows starting at `row0`. Output is clamped uint8
 *  (Uint8ClampedArray clamps the shifted accumulator exactly like Pillow's clip8). Sums stay in
 *  int32 as in Pillow (every partial sum is below 255 · 1.25 · 2^22 < 2^31 in magnitude), so the
 *  products and |0 stay exact and V8 keeps them on integer arithmetic. Taps are unrolled by two
 *  (measured fastest). Math.imul is avoided on purpose: under jest's vm sandbox it is not inlined
 *  and runs ~50x slower. */
function horizontal8(
  image: Uint8Array,
  srcW: number,
  ch: number,
  row0: number,
  rows: number,
  c: AxisCoefficients,
  premultiplyAlpha: boolean,
): Uint8Array {
  const outW = c.count;
  const out = new Uint8ClampedArray(outW * rows * ch);
  const { start, taps, fixed: k, ksize } = c;
  // Premultiplied resampling converts one source row at a time into this scratch row instead of
  // copying the whole image (a 50-megapixel RGBA image would need another 200 MB).
  const scratch = premultiplyAlpha ? new Uint8Array(srcW * ch) : undefined;
  let o = 0;
  for (let y = 0; y < rows; y++) {
    let src = image;
    let rowOff = (row0 + y) * srcW * ch;
    if (scratch) {
      premultiplyInto(scratch, 0, image, rowOff, srcW * ch, ch);
      src = scratch;
      rowOff = 0;
    }
    for (let x = 0; x < outW; x++) {
      let ki = x * ksize;
      const kEnd = ki + taps[x];
      let s = rowOff + start[x] * ch;
      if (ch === 3) {
        let a0 = HALF,
          a1 = HALF,
          a2 = HALF;
        for (; ki + 1 < kEnd; ki += 2, s += 6) {
          const w = k[ki],
            v = k[ki + 1];
          a0 = (a0 + src[s] * w + src[s + 3] * v) | 0;
          a1 = (a1 + src[s + 1] * w + src[s + 4] * v) | 0;
          a2 = (a2 + src[s + 2] * w + src[s + 5] * v) | 0;
        }
        if (ki < kEnd) {
          const w = k[ki];
          a0 = (a0 + src[s] * w) | 0;
          a1 = (a1 + src[s + 1] * w) | 0;
          a2 = (a2 + src[s + 2] * w) | 0;
        }
        out[o] = a0 >> PRECISION_BITS;
        out[o + 1] = a1 >> PRECISION_BITS;
        out[o + 2] = a2 >> PRECISION_BITS;
        o += 3;
      } else if (ch === 4) {
        let a0 = HALF,
          a1 = HALF,
          a2 = HALF,
          a3 = HALF;
        for (; ki + 1 < kEnd; ki += 2, s += 8) {
          const w = k[ki],
            v = k[ki + 1];
          a0 = (a0 + src[s] * w + src[s + 4] * v) | 0;
          a1 = (a1 + src[s + 1] * w + src[s + 5] * v) | 0;
          a2 = (a2 + src[s + 2] * w + src[s + 6] * v) | 0;
          a3 = (a3 + src[s + 3] * w + src[s + 7] * v) | 0;
        }
        if (ki < kEnd) {
          const w = k[ki];
          a0 = (a0 + src[s] * w) | 0;
          a1 = (a1 + src[s + 1] * w) | 0;
          a2 = (a2 + src[s + 2] * w) | 0;
          a3 = (a3 + src[s + 3] * w) | 0;
        }
        out[o] = a0 >> PRECISION_BITS;
        out[o + 1] = a1 >> PRECISION_BITS;
        out[o + 2] = a2 >> PRECISION_BITS;
        out[o + 3] = a3 >> PRECISION_BITS;
        o += 4;
      } else {
        // 1 band (L) and 2 bands (La): one accumulator per band.
        for (let b = 0; b < ch; b++) {
          let a = HALF;
          for (let i = ki, ss = s + b; i < kEnd; i++, ss += ch) a = (a + src[ss] * k[i]) | 0;
          out[o++] = a >> PRECISION_BITS;
        }
      }
    }
  }
  return new Uint8Array(out.buffer);
}

/** Vertical 8-bit pass: `src` holds rows [row0, ...) of width `rowLen` samples. Accumulates two
 *  source rows at a time into a row of int32 sums (same per-pixel tap order as Pillow's loop,
 *  contiguous memory access). */
function vertical8(src: Uint8Array, rowLen: number, row0: number, c: AxisCoefficients): Uint8Array {
  const out = new Uint8ClampedArray(rowLen * c.count);
  const acc = new Int32Array(rowLen);
  const { start, taps, fixed: k, ksize } = c;
  for (let y = 0; y < c.count; y++) {
    acc.fill(HALF);
    const n = taps[y];
    const kOff = y * ksize;
    let t = 0;
    for (; t + 1 < n; t += 2) {
      const w = k[kOff + t],
        v = k[kOff + t + 1];
      const s = (start[y] - row0 + t) * rowLen;
      const s2 = s + rowLen;
      for (let x = 0; x < rowLen; x++) acc[x] = (acc[x] + src[s + x] * w + src[s2 + x] * v) | 0;
    }
    if (t < n) {
      const w = k[kOff + t];
      const s = (start[y] - row0 + t) * rowLen;
      for (let x = 0; x < rowLen; x++) acc[x] = (acc[x] + src[s + x] * w) | 0;
    }
    const o = y * rowLen;
    for (let x = 0; x < rowLen; x++) out[o + x] = acc[x] >> PRECISION_BITS;
  }
  return new Uint8Array(out.buffer);
}

/** Pillow's ROUND_UP for the 32-bit passes: half away from zero. */
function roundUp(f: number): number {
  return f >= 0 ? Math.floor(f + 0.5) : -Math.floor(Math.abs(f) + 0.5);
}

function horizontal32(src: Int32Array, srcW: number, row0: number, rows: number, c: AxisCoefficients): Int32Array {
  const outW = c.count;
  const out = new Int32Array(outW * rows);
  const { start, taps, weights: k, ksize } = c;
  for (let y = 0; y < rows; y++) {
    const rowOff = (row0 + y) * srcW;
    for (let x = 0; x < outW; x++) {
      let ss = 0.0;
      const s = rowOff + start[x];
      const kOff = x * ksize;
      for (let t = 0; t < taps[x]; t++) ss += src[s + t] * k[kOff + t];
      out[y * outW + x] = roundUp(ss);
    }
  }
  return out;
}

function vertical32(src: Int32Array, rowLen: number, row0: number, c: AxisCoefficients): Int32Array {
  const out = new Int32Array(rowLen * c.count);
  const acc = new Float64Array(rowLen);
  const { start, taps, weights: k, ksize } = c;
  for (let y = 0; y < c.count; y++) {
    acc.fill(0);
    for (let t = 0; t < taps[y]; t++) {
      const w = k[y * ksize + t];
      const s = (start[y] - row0 + t) * rowLen;
      for (let x = 0; x < rowLen; x++) acc[x] += src[s + x] * w;
    }
    const o = y * rowLen;
    for (let x = 0; x < rowLen; x++) out[o + x] = roundUp(acc[x]);
  }
  return out;
}

/** A rectangle of the resized image, in resized coordinates. */
export interface Window {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

type Samples = Uint8Array | Int32Array;

/** Copies window rows/columns out of an interleaved image. */
export function cropSamples<T extends Samples>(src: T, srcW: number, ch: number, win: Window): T {
  const out = new (src.constructor as { new (n: number): T })(win.w * win.h * ch);
  const rowLen = win.w * ch;
  for (let y = 0; y < win.h; y++) {
    const s = ((win.y0 + y) * srcW + win.x0) * ch;
    out.set(src.subarray(s, s + rowLen) as never, y * rowLen);
  }
  return out;
}

/** NEAREST resize (Pillow forces it for modes '1' and 'P'), window only. */
export function resizeNearest(
  src: Uint8Array,
  w: number,
  h: number,
  ch: number,
  outW: number,
  outH: number,
  win: Window,
): Uint8Array {
  const xs = nearestIndices(w, outW, win.x0, win.w);
  const ys = nearestIndices(h, outH, win.y0, win.h);
  const out = new Uint8Array(win.w * win.h * ch);
  let o = 0;
  for (let y = 0; y < win.h; y++) {
    const row = ys[y] * w;
    if (ch === 3) {
      // Palette images (stored expanded): the common case, without the per-band loop.
      for (let x = 0; x < win.w; x++, o += 3) {
        const s = (row + xs[x]) * 3;
        out[o] = src[s];
        out[o + 1] = src[s + 1];
        out[o + 2] = src[s + 2];
      }
      continue;
    }
    for (let x = 0; x < win.w; x++) {
      const s = (row + xs[x]) * ch;
      for (let b = 0; b < ch; b++) out[o++] = src[s + b];
    }
  }
  return out;
}

/** Separable resize, horizontal pass first, each pass skipped when its dimension is unchanged
 *  (ImagingResampleInner). 8-bit fixed point for Uint8Array, float64 for Int32Array ('I'). */
export function resizeSeparable<T extends Samples>(
  src: T,
  w: number,
  h: number,
  ch: number,
  outW: number,
  outH: number,
  win: Window,
  filter: ResampleFilter,
  premultiplyAlpha = false,
): T {
  const needH = outW !== w;
  const needV = outH !== h;
  const cv = needV ? axisCoefficients(h, outH, filter, win.y0, win.h) : undefined;
  const [row0, row1] = cv ? rowSpan(cv) : [win.y0, win.y0 + win.h];
  const is32 = src instanceof Int32Array;
  if (is32 && (ch !== 1 || premultiplyAlpha)) throw new Error('32-bit resampling supports one band without alpha only');
  let tmp: Samples;
  if (needH) {
    const ch_ = axisCoefficients(w, outW, filter, win.x0, win.w);
    tmp = is32
      ? horizontal32(src as Int32Array, w, row0, row1 - row0, ch_)
      : horizontal8(src as Uint8Array, w, ch, row0, row1 - row0, ch_, premultiplyAlpha);
  } else {
    tmp = cropSamples(src, w, ch, { x0: win.x0, y0: row0, w: win.w, h: row1 - row0 });
    if (premultiplyAlpha) premultiplyInto(tmp as Uint8Array, 0, tmp as Uint8Array, 0, tmp.length, ch);
  }
  const out = !cv
    ? (tmp as Uint8Array)
    : is32
      ? vertical32(tmp as Int32Array, win.w, row0, cv)
      : vertical8(tmp as Uint8Array, win.w * ch, row0, cv);
  if (premultiplyAlpha) unpremultiply(out as Uint8Array, ch);
  return out as T;
}

/** RGBA→RGBa / LA→La (Pillow's MULDIV255 premultiply) of `len` samples from src[srcOff] into
 *  dst[dstOff] (may be the same place); the alpha band is the last one. */
export function premultiplyInto(
  dst: Uint8Array,
  dstOff: number,
  src: Uint8Array,
  srcOff: number,
  len: number,
  ch: number,
): void {
  const last = ch - 1;
  for (let p = 0; p < len; p += ch) {
    const a = src[srcOff + p + last];
    for (let b = 0; b < last; b++) {
      const t = src[srcOff + p + b] * a + 128;
      dst[dstOff + p + b] = ((t >> 8) + t) >> 8;
    }
    dst[dstOff + p + last] = a;
  }
}

/** RGBa→RGBA / La→LA, in place: alpha 0 and 255 keep the samples, else min(255, 255*c/a). */
export function unpremultiply(data: Uint8Array, ch: number): Uint8Array {
  const last = ch - 1;
  for (let p = 0; p < data.length; p += ch) {
    const a = data[p + last];
    if (a === 0 || a === 255) continue;
    for (let b = 0; b < last; b++) {
      const v = Math.floor((255 * data[p + b]) / a);
      data[p + b] = v > 255 ? 255 : v;
    }
  }
  return data;
}
