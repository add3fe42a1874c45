/**
 * Container sniffing and the few header fields that decide which mode Pillow 9.4 (the reference
 * decoder) opens a file in. sharp normalises pixels (expands palettes, adds alpha for tRNS, hides
 * bit depth), but the reference resamples *in the original mode* (NEAREST for palette images,
 * float for 16-bit grey, premultiplied for alpha), so the mode must come from the file itself.
 * Everything here reads headers only and never trusts a length field beyond the buffer.
 */
import { ImageError } from './errors';

export type ContainerFormat = 'png' | 'jpeg' | 'gif' | 'webp' | 'tiff';

/** Pillow image modes that the preprocessing pipeline distinguishes. */
export type PilMode = '1' | 'L' | 'P' | 'LA' | 'RGB' | 'RGBA' | 'CMYK' | 'I';

export interface HeaderInfo {
  format: ContainerFormat;
  /** Pillow's mode; undefined where only the decoder's metadata can tell (WebP: alpha or not). */
  mode?: PilMode;
  /** RGB triples of the palette Pillow attaches to a 'P' image (index i at 3*i). */
  palette?: Uint8Array;
  /** GIF: transparency index of the first frame, if any. */
  gifTransparency?: number;
  /** The size the header declares, where it can be read without a decoder (a cost estimate for
   *  admission; the decoder's own header read stays the authority). */
  width?: number;
  height?: number;
}

const PNG_SIG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(b: Uint8Array, sig: readonly number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

function ascii(s: string): number[] {
  return Array.from(s, (c) => c.charCodeAt(0));
}

export function sniffFormat(b: Uint8Array): ContainerFormat | undefined {
  if (startsWith(b, PNG_SIG)) return 'png';
  if (startsWith(b, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(b, ascii('GIF87a')) || startsWith(b, ascii('GIF89a'))) return 'gif';
  if (startsWith(b, ascii('RIFF')) && startsWith(b, ascii('WEBP'), 8)) return 'webp';
  if (startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])) return 'tiff';
  return undefined;
}

function corrupt(format: string, what: string): ImageError {
  return new ImageError('CORRUPT', `corrupt ${format} file: ${what}`);
}

const u16be = (b: Uint8Array, i: number): number => (b[i] << 8) | b[i + 1];
const u16le = (b: Uint8Array, i: number): number => b[i] | (b[i + 1] << 8);
const u32be = (b: Uint8Array, i: number): number =>
  ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;

/** Pillow 9.4 PngImagePlugin._MODES, keyed by `${bitDepth},${colorType}`. 16-bit LA opens as RGBA
 *  with L replicated, which resamples identically to LA, so it is kept as LA here. */
const PNG_MODES: Record<string, PilMode> = {
  '1,0': '1',
  '2,0': 'L',
  '4,0': 'L',
  '8,0': 'L',
  '16,0': 'I',
  '8,2': 'RGB',
  '16,2': 'RGB',
  '1,3': 'P',
  '2,3': 'P',
  '4,3': 'P',
  '8,3': 'P',
  '8,4': 'LA',
  '16,4': 'LA',
  '8,6': 'RGBA',
  '16,6': 'RGBA',
};

function parsePng(b: Uint8Array): HeaderInfo {
  if (b.length < 33 || u32be(b, 8) !== 13 || !startsWith(b, ascii('IHDR'), 12))
    throw corrupt('PNG', 'missing IHDR chunk');
  const depth = b[24];
  const colorType = b[25];
  const mode = PNG_MODES[`${depth},${colorType}`];
  if (!mode) throw corrupt('PNG', `invalid bit depth ${depth} for colour type ${colorType}`);
  const info: HeaderInfo = { format: 'png', mode, width: u32be(b, 16), height: u32be(b, 20) };
  if (mode === 'P') {
    // Walk the chunks up to the first IDAT to find PLTE (needed only for padding with fill_color).
    let i = 8;
    while (i + 8 <= b.length) {
      const len = u32be(b, i);
      const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
      if (type === 'PLTE') {
        if (i + 8 + len > b.length) break;
        info.palette = b.slice(i + 8, i + 8 + len - (len % 3));
        break;
      }
      if (type === 'IDAT' || type === 'IEND') break;
      i += 12 + len;
    }
  }
  return info;
}

function parseJpeg(b: Uint8Array): HeaderInfo {
  let i = 2;
  let components = 0;
  let precision = 8;
  let width = 0;
  let height = 0;
  // Pillow reads markers up to the first SOS; the frame header (SOFn) fixes the mode.
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) {
      i++;
      continue;
    }
    const m = b[i + 1];
    if (m === 0xff) {
      i++;
      continue;
    }
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7) || m === 0x00) {
      i += 2;
      continue;
    }
    if (m === 0xd9 || m === 0xda) break;
    const len = u16be(b, i + 2);
    if (len < 2) throw corrupt('JPEG', 'bad marker length');
    const seg = i + 4;
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (seg + 6 > b.length) throw corrupt('JPEG', 'truncated frame header');
      precision = b[seg];
      height = u16be(b, seg + 1);
      width = u16be(b, seg + 3);
      components = b[seg + 5];
    }
    i += 2 + len;
  }
  if (components === 0) throw corrupt('JPEG', 'no frame header before the image data');
  if (precision !== 8)
    throw new ImageError('UNSUPPORTED_FORMAT', `unsupported ${precision}-bit JPEG (only 8-bit samples are supported)`);
  const mode: PilMode | undefined =
    components === 1 ? 'L' : components === 3 ? 'RGB' : components === 4 ? 'CMYK' : undefined;
  if (!mode) throw new ImageError('UNSUPPORTED_FORMAT', `unsupported JPEG with ${components} components`);
  return { format: 'jpeg', mode, width, height };
}

/** Pillow treats a GIF colour table equal to the grey ramp (i,i,i) as "no palette" and opens the
 *  image as 'L' (resampled bicubic), not 'P' (resampled nearest). */
function isPaletteNeeded(p: Uint8Array): boolean {
  for (let i = 0; i + 2 < p.length; i += 3) {
    const idx = i / 3;
    if (!(p[i] === idx && p[i + 1] === idx && p[i + 2] === idx)) return true;
  }
  return false;
}

function parseGif(b: Uint8Array): HeaderInfo {
  if (b.length < 13) throw corrupt('GIF', 'truncated screen descriptor');
  const flags = b[10];
  let i = 13;
  let globalPalette: Uint8Array | undefined;
  if (flags & 0x80) {
    const n = 3 << ((flags & 7) + 1);
    if (i + n > b.length) throw corrupt('GIF', 'truncated global colour table');
    const p = b.subarray(i, i + n);
    if (isPaletteNeeded(p)) globalPalette = p.slice();
    i += n;
  }
  let transparency: number | undefined;
  for (;;) {
    if (i >= b.length) throw corrupt('GIF', 'no image in file');
    const block = b[i];
    if (block === 0x21) {
      const label = b[i + 1];
      i += 2;
      let first = true;
      while (i < b.length && b[i] !== 0) {
        const n = b[i];
        if (first && label === 0xf9 && n >= 4 && i + 4 < b.length && b[i + 1] & 1) transparency = b[i + 4];
        first = false;
        i += 1 + n;
      }
      i += 1;
    } else if (block === 0x2c) {
      if (i + 10 > b.length) throw corrupt('GIF', 'truncated image descriptor');
      const f = b[i + 9];
      let palette: Uint8Array | false | undefined;
      if (f & 0x80) {
        const n = 3 << ((f & 7) + 1);
        if (i + 10 + n > b.length) throw corrupt('GIF', 'truncated local colour table');
        const p = b.subarray(i + 10, i + 10 + n);
        palette = isPaletteNeeded(p) ? p.slice() : false;
      }
      const framePalette = palette !== undefined ? palette : globalPalette;
      // The decoder's canvas: the logical screen, grown to hold the first frame.
      const width = Math.max(u16le(b, 6), u16le(b, i + 1) + u16le(b, i + 5));
      const height = Math.max(u16le(b, 8), u16le(b, i + 3) + u16le(b, i + 7));
      return framePalette
        ? { format: 'gif', mode: 'P', palette: framePalette, gifTransparency: transparency, width, height }
        : { format: 'gif', mode: 'L', gifTransparency: transparency, width, height };
    } else if (block === 0x3b) {
      throw corrupt('GIF', 'no image in file');
    } else {
      throw corrupt('GIF', `unknown block 0x${block.toString(16)}`);
    }
  }
}

function parseTiff(b: Uint8Array): HeaderInfo {
  const le = b[0] === 0x49;
  const u16 = (i: number): number => (le ? u16le(b, i) : u16be(b, i));
  const u32 = (i: number): number => (le ? (u16le(b, i) | (u16le(b, i + 2) << 16)) >>> 0 : u32be(b, i));
  if (b.length < 8) throw corrupt('TIFF', 'truncated header');
  const ifd = u32(4);
  if (ifd + 2 > b.length) throw corrupt('TIFF', 'IFD offset outside the file');
  const n = u16(ifd);
  let photometric = -1;
  let spp = 1;
  let bits = 1;
  let extra = -1;
  let width = 0;
  let height = 0;
  let colorMap: { count: number; offset: number } | undefined;
  for (let e = 0; e < n; e++) {
    const at = ifd + 2 + 12 * e;
    if (at + 12 > b.length) throw corrupt('TIFF', 'truncated IFD');
    const tag = u16(at);
    const type = u16(at + 2);
    const count = u32(at + 4);
    // SHORT values that fit in 4 bytes are stored inline; only the first value matters here.
    const firstShort = (): number => {
      if (type === 3) {
        const off = count * 2 <= 4 ? at + 8 : u32(at + 8);
        return off + 2 <= b.length ? u16(off) : -1;
      }
      return type === 4 ? u32(at + 8) : u16(at + 8);
    };
    if (tag === 258) bits = firstShort();
    else if (tag === 262) photometric = firstShort();
    else if (tag === 277) spp = firstShort();
    else if (tag === 338) extra = firstShort();
    else if (tag === 256) width = firstShort();
    else if (tag === 257) height = firstShort();
    else if (tag === 320 && type === 3) colorMap = { count, offset: u32(at + 8) };
  }
  let mode: PilMode | undefined;
  const info: HeaderInfo = { format: 'tiff', width, height };
  if (photometric === 0 || photometric === 1) {
    // 16-bit grey TIFF is 'I;16' in Pillow 9.4, which cannot resize it ("image has wrong mode");
    // it is accepted here with the same values as 16-bit grey PNG ('I').
    if (spp === 1) mode = bits === 1 ? '1' : bits === 16 ? 'I' : 'L';
    else if (spp === 2) mode = 'LA';
  } else if (photometric === 2 || photometric === 6) {
    // Four samples with ExtraSamples=0 ("unspecified") is RGBX in Pillow: opened as RGB.
    if (spp === 3) mode = 'RGB';
    else if (spp === 4) mode = extra === 0 ? 'RGB' : 'RGBA';
  } else if (photometric === 3) {
    mode = 'P';
    if (colorMap && colorMap.offset + colorMap.count * 2 <= b.length) {
      // TIFF colour maps hold all reds, then all greens, then all blues, as 16-bit values;
      // Pillow keeps the high byte.
      const entries = Math.floor(colorMap.count / 3);
      const pal = new Uint8Array(entries * 3);
      for (let c = 0; c < 3; c++) {
        for (let k = 0; k < entries; k++) pal[k * 3 + c] = u16(colorMap.offset + 2 * (c * entries + k)) >> 8;
      }
      info.palette = pal;
    }
  } else if (photometric === 5 && spp === 4) {
    mode = 'CMYK';
  }
  if (!mode)
    throw new ImageError(
      'UNSUPPORTED_FORMAT',
      `unsupported TIFF layout (photometric ${photometric}, ${spp} samples of ${bits} bits)`,
    );
  info.mode = mode;
  return info;
}

const u24le = (b: Uint8Array, i: number): number => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);

/** The canvas a WebP declares: VP8X (extended), VP8L (lossless) or VP8 (lossy) header. */
function webpSize(b: Uint8Array): { width?: number; height?: number } {
  if (b.length < 30) return {};
  const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
  if (chunk === 'VP8X') return { width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
  if (chunk === 'VP8L' && b[20] === 0x2f) {
    const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
    return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === 'VP8 ' && b[23] === 0x9d && b[24] === 0x01 && b[25] === 0x2a)
    return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  return {};
}

export const SUPPORTED_FORMATS = 'JPEG, PNG, WebP, GIF, TIFF';

/** Identifies the container and reads the mode-deciding header fields. */
export function readHeader(b: Uint8Array): HeaderInfo {
  const format = sniffFormat(b);
  switch (format) {
    case 'png':
      return parsePng(b);
    case 'jpeg':
      return parseJpeg(b);
    case 'gif':
      return parseGif(b);
    case 'tiff':
      return parseTiff(b);
    case 'webp':
      return { format: 'webp', ...webpSize(b) };
    default:
      throw new ImageError(
        'UNSUPPORTED_FORMAT',
        `unsupported or unrecognised image format (supported: ${SUPPORTED_FORMATS})`,
      );
  }
}
