/**
 * open_clip's eval transform, `image_transform(cfg.size, is_train=False, resize_mode, interpolation,
 * fill_color, mean, std)`, applied to a decoded image exactly as torchvision 0.14 + Pillow 9.4 do:
 *
 *   shortest: Resize(size) (short side → size, long side floor(size*long/short)) + CenterCrop(size)
 *   longest:  ResizeKeepRatio(size, longest=1) (both sides round-half-even) + CenterCropOrPad(fill)
 *   squash:   Resize((size, size))
 *   then convert('RGB'), ToTensor, Normalize → CHW float32.
 *
 * The resize runs in the image's own mode before the RGB conversion, as PIL does.
 */
import { checkPreprocessConfig as checkConfig, type PreprocessConfig } from '../model/config';
import { paletteColour, type DecodedImage } from './decode';
import { ImageError } from './errors';
import { resizedSize, roundHalfEven } from './resize-size';
import { cropSamples, resizeNearest, resizeSeparable, type Window } from './resample';
import { cropWindow, MAX_RESIZED_SIDE, placeAxis, sourceSpan } from './source-span';
import { resizeSeparableSimd, simdResampleAvailable } from './simd/resample';

// The resize geometry lives in resize-size.ts (decode.ts needs it too, without importing this file).
export { resizedSize, roundHalfEven };

/** Float32 ToTensor + Normalize per uint8 level: f32(u8)/f32(255), then (x - mean)/std, each step
 *  rounded to float32 as torch does. */
function normalisationTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]);
    const s = Math.fround(std[c]);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(v / 255);
      lut[c * 256 + v] = Math.fround(Math.fround(x - m) / s);
    }
  }
  return lut;
}

const lutCache = new Map<string, Float32Array>();
function lutFor(cfg: PreprocessConfig): Float32Array {
  const key = `${cfg.mean.join(',')}|${cfg.std.join(',')}`;
  let lut = lutCache.get(key);
  if (!lut) {
    lut = normalisationTable(cfg.mean, cfg.std);
    lutCache.set(key, lut);
  }
  return lut;
}

const clip8 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Pillow cmyk2rgb for one ink: clip8(nk - MULDIV255(c, nk)) with nk = 255 - K. */
function cmykChannel(c: number, nk: number): number {
  const t = c * nk + 128;
  return clip8(nk - (((t >> 8) + t) >> 8));
}

/** RGB that convert('RGB') gives for the padding colour `fill` painted in `img.mode`
 *  (torchvision F.pad → ImageOps.expand with the fill repeated per band). */
function fillRgb(img: DecodedImage, fill: number): [number, number, number] {
  switch (img.mode) {
    case '1':
      return fill !== 0 ? [255, 255, 255] : [0, 0, 0];
    case 'P':
      return paletteColour(img.palette, fill);
    case 'CMYK': {
      const nk = 255 - fill;
      const v = cmykChannel(fill, nk);
      return [v, v, v];
    }
    default:
      return [fill, fill, fill];
  }
}

/** The preprocess_cfg check lives beside its declaration (model/config.ts); the pool runs it at construction. */
export { checkConfig };

/** Resizes `img` to outW×outH in its own mode, computing only `win`. */
function resizeWindow(
  img: DecodedImage,
  outW: number,
  outH: number,
  win: Window,
  cfg: PreprocessConfig,
): Uint8Array | Int32Array {
  const { width: w, height: h, channels: ch } = img;
  if (outW === w && outH === h) return cropSamples(img.region ? wholeImage(img) : img.data, w, ch, win);
  switch (img.mode) {
    case '1':
    case 'P':
      return resizeNearest(wholeImage(img) as Uint8Array, w, h, ch, outW, outH, win);
    case 'RGBA':
    case 'LA':
      // PIL resizes RGBA/LA as premultiplied RGBa/La and converts back.
      return separable(img, outW, outH, win, cfg, true);
    default:
      return separable(img, outW, outH, win, cfg, false);
  }
}

/** The bicubic/bilinear resize: the WebAssembly SIMD passes for 8-bit images (L, LA, RGB,
 *  RGBA, CMYK), the TypeScript reference for 32-bit 'I' and where WebAssembly SIMD is missing.
 *  Both give the same bits. */
function separable(
  img: DecodedImage,
  outW: number,
  outH: number,
  win: Window,
  cfg: PreprocessConfig,
  premultiplyAlpha: boolean,
): Uint8Array | Int32Array {
  const { width: w, height: h, channels: ch, region } = img;
  if (region) {
    // The decoder kept only what this resize reads: check it is so for this cfg.
    const need = sourceSpan(w, h, cfg);
    if (
      !need ||
      need.x < region.x ||
      need.y < region.y ||
      need.x + need.width > region.x + region.width ||
      need.y + need.height > region.y + region.height
    ) {
      throw new Error(
        `decoded region ${JSON.stringify(region)} of ${w}x${h} does not hold what this transform reads (${JSON.stringify(need)}): decode with the same cfg`,
      );
    }
  }
  if (img.mode !== 'I' && simdResampleAvailable()) {
    return resizeSeparableSimd(
      img.data as Uint8Array,
      w,
      h,
      ch,
      outW,
      outH,
      win,
      cfg.interpolation,
      premultiplyAlpha,
      region,
    );
  }
  return resizeSeparable(
    region ? wholeImage(img) : img.data,
    w,
    h,
    ch,
    outW,
    outH,
    win,
    cfg.interpolation,
    premultiplyAlpha,
  );
}

/** A region-only decode placed in a full-size buffer (zeros where nothing is read), for the
 *  TypeScript reference passes, which index the whole image. */
function wholeImage(img: DecodedImage): Uint8Array | Int32Array {
  const { width: w, height: h, channels: ch, region } = img;
  if (!region) return img.data;
  const full = new (img.data.constructor as { new (n: number): Uint8Array | Int32Array })(w * h * ch);
  const rowLen = region.width * ch;
  for (let y = 0; y < region.height; y++) {
    full.set(img.data.subarray(y * rowLen, (y + 1) * rowLen) as never, ((region.y + y) * w + region.x) * ch);
  }
  return full;
}

/** Writes the window, converted to RGB and normalised, into the CHW planes. */
function writeWindow(
  out: Float32Array,
  size: number,
  img: DecodedImage,
  data: Uint8Array | Int32Array,
  win: { w: number; h: number; dstX: number; dstY: number },
  lut: Float32Array,
): void {
  const plane = size * size;
  const ch = img.channels;
  if (img.mode === 'RGB' || img.mode === 'P' || img.mode === 'RGBA') {
    // The common case without the per-pixel mode switch below (RGBA: alpha dropped).
    for (let y = 0; y < win.h; y++) {
      let o = (win.dstY + y) * size + win.dstX;
      let s = y * win.w * ch;
      for (let x = 0; x < win.w; x++, o++, s += ch) {
        out[o] = lut[data[s]];
        out[plane + o] = lut[256 + data[s + 1]];
        out[2 * plane + o] = lut[512 + data[s + 2]];
      }
    }
    return;
  }
  for (let y = 0; y < win.h; y++) {
    let o = (win.dstY + y) * size + win.dstX;
    let s = y * win.w * ch;
    for (let x = 0; x < win.w; x++, o++, s += ch) {
      let r: number, g: number, b: number;
      switch (img.mode) {
        case 'I':
          r = g = b = clip8(data[s]);
          break;
        case '1':
          r = g = b = data[s] !== 0 ? 255 : 0;
          break;
        case 'L':
        case 'LA':
          r = g = b = data[s];
          break;
        case 'CMYK': {
          const nk = 255 - data[s + 3];
          r = cmykChannel(data[s], nk);
          g = cmykChannel(data[s + 1], nk);
          b = cmykChannel(data[s + 2], nk);
          break;
        }
        default: // RGB, P (palette-expanded), RGBA (alpha dropped, not composited)
          r = data[s];
          g = data[s + 1];
          b = data[s + 2];
      }
      out[o] = lut[r];
      out[plane + o] = lut[256 + g];
      out[2 * plane + o] = lut[512 + b];
    }
  }
}

/** The full eval transform: decoded image → CHW Float32Array of 3×size×size. */
export function transformImage(img: DecodedImage, cfg: PreprocessConfig): Float32Array {
  checkConfig(cfg);
  const size = cfg.size;
  const [outW, outH] = resizedSize(img.width, img.height, cfg);
  // Extreme aspect ratios: a zero side makes the reference (PIL) raise, and a side beyond 2^24
  // would have it allocate gigabytes; here it would cost a long NEAREST position scan. Both are
  // refused as images this service cannot embed.
  if (outW < 1 || outH < 1 || outW > MAX_RESIZED_SIDE || outH > MAX_RESIZED_SIDE) {
    throw new ImageError(
      'UNSUPPORTED_FORMAT',
      `image aspect ratio too extreme: ${img.width}x${img.height} resizes to ${outW}x${outH} for size ${size}`,
    );
  }
  const px = placeAxis(outW, size);
  const py = placeAxis(outH, size);
  const win = cropWindow(outW, outH, size);
  const data = resizeWindow(img, outW, outH, win, cfg);
  const lut = lutFor(cfg);
  const out = new Float32Array(3 * size * size);
  if (px.count < size || py.count < size) {
    const [r, g, b] = fillRgb(img, cfg.fill_color);
    const plane = size * size;
    out.fill(lut[r], 0, plane);
    out.fill(lut[256 + g], plane, 2 * plane);
    out.fill(lut[512 + b], 2 * plane);
  }
  writeWindow(out, size, img, data, { w: win.w, h: win.h, dstX: px.dst, dstY: py.dst }, lut);
  return out;
}
