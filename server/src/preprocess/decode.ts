/**
 * Decoding untrusted bytes into pixels laid out the way Pillow 9.4 holds them after
 * `Image.open(file)`: the same mode, no EXIF rotation, no ICC conversion, no alpha compositing.
 * sharp (libvips, with libjpeg-turbo/libpng/libwebp like Pillow) does the decoding only; it never
 * resizes here, because its kernels differ from Pillow's.
 *
 * Safety: size and format are checked from the bytes, then the declared dimensions (our own header
 * parse, then sharp's header-only metadata: pixel count, aspect ratio, frame count), all before a
 * single pixel is decoded; the decode itself runs with limitInputPixels, failOn and a timeout (the
 * decode budget: libvips abandons the pipeline when it runs past it) so a lying header, a
 * truncated stream or a pathological encoding fails cleanly.
 */
import sharp, { type Metadata, type OutputInfo, type Sharp, type SharpOptions } from 'sharp';
import type { PreprocessConfig } from '../model/config';
import { ImageError, type ImageLimits } from './errors';
import type { DecodedImage } from './decoded-image';
import { readHeader, SUPPORTED_FORMATS, type HeaderInfo, type PilMode } from './formats';
import { decodePlainPng } from './png-decode';
import { resizedSize } from './resize-size';
import { MAX_RESIZED_SIDE, sourceSpan } from './source-span';

/** Most frames (GIF/APNG/WebP animation, TIFF pages) a file may declare: only the first is used,
 *  but libvips walks every frame header to count them. */
export const MAX_FRAMES = 1000;
export interface DecodeOptions {
  /** The model's preprocessing: extreme aspect ratios are refused from the header; with its
   *  interpolation too, a JPEG is cut to what the transform reads (DecodedImage.region). */
  cfg?: Pick<PreprocessConfig, 'size' | 'resize_mode'> & Partial<Pick<PreprocessConfig, 'interpolation'>>;
  /** Decode budget: libvips stops the decode after this many whole seconds (0 or absent: none). */
  timeoutSeconds?: number;
}

/** What admission learns from the bytes alone, synchronously and in microseconds. */
export interface ImageInspection {
  header: HeaderInfo;
  /** Declared width × height; the pixel limit when our parser cannot tell (priced at the worst). */
  pixels: number;
}

/**
 * Header-only checks that need no decoder: emptiness, encoded size, a supported container, and the
 * declared pixel count where the container states it. Cheap enough for the event loop.
 */
export function inspectImage(bytes: Uint8Array, limits: ImageLimits): ImageInspection {
  if (bytes.length === 0) throw new ImageError('EMPTY', 'image is empty (0 bytes)');
  if (bytes.length > limits.maxBytes) {
    throw new ImageError('TOO_LARGE', `image is ${bytes.length} bytes, more than the limit of ${limits.maxBytes}`);
  }
  const header = readHeader(bytes);
  const { width, height } = header;
  if (width === undefined || height === undefined || !(width > 0 && height > 0))
    return { header, pixels: limits.maxPixels };
  checkPixels(width, height, limits);
  return { header, pixels: width * height };
}

function checkPixels(width: number, height: number, limits: ImageLimits): void {
  if (width * height > limits.maxPixels) {
    throw new ImageError(
      'TOO_MANY_PIXELS',
      `image declares ${width}x${height} = ${width * height} pixels, more than the limit of ${limits.maxPixels}`,
    );
  }
}

function checkAspect(width: number, height: number, cfg: DecodeOptions['cfg']): void {
  if (!cfg) return;
  const [outW, outH] = resizedSize(width, height, cfg);
  if (outW < 1 || outH < 1 || outW > MAX_RESIZED_SIDE || outH > MAX_RESIZED_SIDE) {
    throw new ImageError(
      'UNSUPPORTED_FORMAT',
      `image aspect ratio too extreme: ${width}x${height} resizes to ${outW}x${outH} for size ${cfg.size}`,
    );
  }
}

export type { DecodedImage };

const CHANNELS: Record<PilMode, 1 | 2 | 3 | 4> = { '1': 1, L: 1, I: 1, LA: 2, RGB: 3, P: 3, RGBA: 4, CMYK: 4 };

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Maps a libvips/sharp failure to a typed error; the message keeps libvips' own words. */
function fromSharpError(err: unknown, format: string): ImageError {
  const msg = err instanceof Error ? err.message : String(err);
  if (/timeout/i.test(msg))
    return new ImageError('DECODE_TIMEOUT', `${format} image took longer than the decode budget to decode`);
  if (/pixel limit/i.test(msg))
    return new ImageError('TOO_MANY_PIXELS', `${format} image exceeds the pixel limit: ${msg}`);
  if (/unsupported image format/i.test(msg)) {
    return new ImageError('UNSUPPORTED_FORMAT', `unsupported image format (supported: ${SUPPORTED_FORMATS})`);
  }
  return new ImageError('CORRUPT', `cannot decode ${format} image: ${msg.split('\n')[0]}`);
}

function sharpOptions(limits: ImageLimits): SharpOptions {
  return {
    // 'error' rejects truncated and corrupt data but tolerates libjpeg/libpng warnings (such as
    // extraneous bytes before a marker) that Pillow also tolerates.
    failOn: 'error',
    limitInputPixels: limits.maxPixels,
    ignoreIcc: true,
    sequentialRead: true,
    pages: 1,
    page: 0,
    autoOrient: false,
  };
}

async function readDeclaredSize(
  buf: Buffer,
  header: HeaderInfo,
  limits: ImageLimits,
  cfg: DecodeOptions['cfg'],
): Promise<{ width: number; height: number; hasAlpha: boolean }> {
  let meta: Metadata;
  try {
    // Header only: limitInputPixels is disabled here so the check below gives the precise error.
    meta = await sharp(buf, { ...sharpOptions(limits), limitInputPixels: false }).metadata();
  } catch (err) {
    throw fromSharpError(err, header.format.toUpperCase());
  }
  const width = meta.width;
  const height = meta.pageHeight ?? meta.height;
  if (!(width > 0) || !(height > 0))
    throw new ImageError(
      'CORRUPT',
      `${header.format.toUpperCase()} header declares an empty image (${width}x${height})`,
    );
  checkPixels(width, height, limits);
  checkAspect(width, height, cfg);
  if ((meta.pages ?? 1) > MAX_FRAMES) {
    throw new ImageError(
      'TOO_MANY_PIXELS',
      `${header.format.toUpperCase()} declares ${meta.pages} frames, more than the limit of ${MAX_FRAMES} (only the first is used)`,
    );
  }
  return { width, height, hasAlpha: meta.hasAlpha };
}

/** Chooses the sharp pipeline that yields the mode's samples without colour conversion. */
function rawPipeline(img: Sharp, mode: PilMode, format: string): Sharp {
  switch (mode) {
    case 'I':
      return img.toColourspace('grey16').raw({ depth: 'ushort' });
    case 'CMYK':
      // Keep CMYK end to end; by default libvips converts it to sRGB with a profile.
      return img.pipelineColourspace('cmyk').toColourspace('cmyk').raw();
    case 'L':
    case '1':
      // Natively grey inputs stay 1-band; a greyscale-palette GIF ('L' in Pillow) arrives as sRGB
      // with R=G=B, where band 0 is taken below instead of a lossy sRGB→b-w conversion.
      return format === 'gif' ? img.raw() : img.toColourspace('b-w').raw();
    default:
      return img.raw();
  }
}

/** Picks/reorders the decoded bands into the layout of `mode`. */
function toModeLayout(src: Uint8Array, srcCh: number, n: number, mode: PilMode): Uint8Array {
  const ch = CHANNELS[mode];
  if (srcCh === ch && mode !== 'LA') return src;
  const out = new Uint8Array(n * ch);
  const alphaSrc = srcCh === 2 || srcCh === 4 ? srcCh - 1 : -1;
  for (let p = 0, s = 0, o = 0; p < n; p++, s += srcCh, o += ch) {
    switch (ch) {
      case 1:
        out[o] = src[s];
        break;
      case 2:
        out[o] = src[s];
        out[o + 1] = alphaSrc >= 0 ? src[s + alphaSrc] : 255;
        break;
      case 3:
        if (srcCh >= 3) {
          out[o] = src[s];
          out[o + 1] = src[s + 1];
          out[o + 2] = src[s + 2];
        } else {
          out[o] = out[o + 1] = out[o + 2] = src[s];
        }
        break;
      default:
        if (srcCh >= 3) {
          out[o] = src[s];
          out[o + 1] = src[s + 1];
          out[o + 2] = src[s + 2];
        } else {
          out[o] = out[o + 1] = out[o + 2] = src[s];
        }
        out[o + 3] = alphaSrc >= 0 ? src[s + alphaSrc] : 255;
    }
  }
  return out;
}

/** Pillow's colour for palette index i: entries past the stored table keep the grey ramp. */
export function paletteColour(palette: Uint8Array | undefined, i: number): [number, number, number] {
  if (palette && 3 * i + 2 < palette.length) return [palette[3 * i], palette[3 * i + 1], palette[3 * i + 2]];
  return [i, i, i];
}

/**
 * libnsgif leaves transparent pixels (and any area the first frame does not cover) as RGBA 0;
 * Pillow keeps their palette index: the transparency index, or 0 where no transparency is set.
 */
function gifFillTransparent(src: Uint8Array, srcCh: number, n: number, header: HeaderInfo): void {
  if (srcCh !== 4) return;
  const idx = header.gifTransparency ?? 0;
  const [r, g, b] = header.mode === 'P' ? paletteColour(header.palette, idx) : [idx, idx, idx];
  for (let p = 0, s = 0; p < n; p++, s += 4) {
    if (src[s + 3] === 0) {
      src[s] = r;
      src[s + 1] = g;
      src[s + 2] = b;
    }
  }
}

/**
 * Checks that an image would decode (headers, limits, and every pixel through libvips, which
 * catches truncated files) without building the pixel layout in JavaScript: all the per-pixel work
 * stays in libvips' threads, none on the calling thread (dataset validation runs on the event loop).
 */
export async function verifyImage(bytes: Uint8Array, limits: ImageLimits, opts: DecodeOptions = {}): Promise<void> {
  const { header } = inspectImage(bytes, limits);
  const buf = toBuffer(bytes);
  await readDeclaredSize(buf, header, limits, opts.cfg);
  try {
    const img = sharp(buf, sharpOptions(limits));
    if (opts.timeoutSeconds) img.timeout({ seconds: Math.max(1, Math.ceil(opts.timeoutSeconds)) });
    // Decoded and discarded by libvips (a 1x1 average of the whole image): no pixel buffer for JS.
    await img.stats();
  } catch (err) {
    throw fromSharpError(err, header.format.toUpperCase());
  }
}

export async function decodeImage(
  bytes: Uint8Array,
  limits: ImageLimits,
  opts: DecodeOptions = {},
): Promise<DecodedImage> {
  const { header } = inspectImage(bytes, limits);
  const buf = toBuffer(bytes);
  const format = header.format.toUpperCase();
  // PNG and JPEG state their size in a header our parser reads completely (IHDR, SOFn; the pixel
  // limit was checked on it above): libvips' own header pass (a whole pipeline, 0.3–0.7 ms) is
  // skipped for them. Their decoders remain the authority: a decoded size that differs from this
  // one is refused below, and the decode runs under the same pixel limit.
  const known =
    (header.format === 'png' || header.format === 'jpeg') && header.mode && header.width && header.height
      ? { width: header.width, height: header.height, hasAlpha: header.mode === 'RGBA' || header.mode === 'LA' }
      : undefined;
  if (known) checkAspect(known.width, known.height, opts.cfg);
  // Plain 8-bit PNGs are decoded directly (png-decode.ts: same samples, a third of the time);
  // anything else, and every malformed file, goes through sharp below.
  const plain = known && header.format === 'png' ? decodePlainPng(bytes, header.mode!) : undefined;
  if (plain) return plain;
  const declared = known && header.format === 'jpeg' ? known : await readDeclaredSize(buf, header, limits, opts.cfg);
  const mode: PilMode = header.mode ?? (declared.hasAlpha ? 'RGBA' : 'RGB');

  // A JPEG is decoded whole (as Pillow does) but libvips hands over only the columns and rows the
  // transform reads: its output copy is a large part of a photo's decode (2000×1500 at 224 px:
  // 77 % of the columns), and the cut is an exact copy of those pixels.
  const region =
    header.format === 'jpeg' && opts.cfg?.interpolation
      ? sourceSpan(declared.width, declared.height, { ...opts.cfg, interpolation: opts.cfg.interpolation })
      : undefined;
  let raw: { data: Buffer; info: OutputInfo };
  try {
    let img = sharp(buf, sharpOptions(limits));
    if (opts.timeoutSeconds) img.timeout({ seconds: Math.max(1, Math.ceil(opts.timeoutSeconds)) });
    if (region) img = img.extract({ left: region.x, top: region.y, width: region.width, height: region.height });
    raw = await rawPipeline(img, mode, header.format).toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw fromSharpError(err, format);
  }
  const { width: outW, height: outH, channels: srcCh } = raw.info;
  if (outW !== (region?.width ?? declared.width) || outH !== (region?.height ?? declared.height)) {
    throw new ImageError(
      'CORRUPT',
      `${format} decoded to ${outW}x${outH} but its header declares ${declared.width}x${declared.height}` +
        (region ? ` (cut to ${region.width}x${region.height})` : ''),
    );
  }
  const { width, height } = declared;
  const n = outW * outH;

  if (mode === 'I') {
    // Native-endian 16-bit samples; a Uint16Array view needs 2-byte alignment, else copy first.
    const bytes16 = raw.data.byteOffset % 2 === 0 ? raw.data : Buffer.from(raw.data);
    const u16 = new Uint16Array(bytes16.buffer, bytes16.byteOffset, bytes16.byteLength >> 1);
    const data = new Int32Array(n);
    for (let p = 0, s = 0; p < n; p++, s += srcCh) data[p] = u16[s];
    return { mode, width, height, channels: 1, data };
  }

  const src = new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
  if (header.format === 'gif') gifFillTransparent(src, srcCh, n, header);
  const data = toModeLayout(src, srcCh, n, mode);
  // CMYK JPEG needs no fix-up: Pillow reads every 4-component JPEG as inverted ("CMYK;I") and
  // libvips (8.7+) inverts every CMYK JPEG too, Adobe marker or not (fixture jpeg_cmyk_noadobe).
  return {
    mode,
    width,
    height,
    channels: CHANNELS[mode],
    data,
    palette: header.palette,
    ...(region ? { region } : {}),
  };
}
