/**
 * A direct decoder for the plain PNGs that dominate real traffic: 8-bit greyscale, grey+alpha,
 * RGB and RGBA, not interlaced, not animated. PNG is lossless, so every conforming decoder yields
 * the same samples as libpng (what Pillow and sharp use); this one skips libvips' pipeline and
 * its copies, inflates with Node's zlib and undoes the row filters (simd/unfilter.ts for RGB and
 * RGBA, the TypeScript `unfilter` below otherwise), which takes about a
 * third of the time of sharp's raw decode on a 512×512 image.
 *
 * It only ever accepts what libpng accepts too: every chunk CRC is checked, the zlib stream must
 * hold exactly height × (1 + row bytes), every filter type must be 0..4. On anything else it
 * returns undefined and the caller decodes with sharp as before, so exotic files and every error
 * message still come from the sharp path. The caller checks the declared size against the limits
 * first; the inflate is capped at the size the header implies.
 */
import * as zlib from 'node:zlib';
import type { DecodedImage } from './decoded-image';
import type { PilMode } from './formats';
import { simdUnfilterAvailable, unfilterSimd } from './simd/unfilter';

/** Colour type → [mode, channels] for the 8-bit cases handled here. */
const COLOUR_TYPES: Record<number, [PilMode, 1 | 2 | 3 | 4]> = {
  0: ['L', 1],
  2: ['RGB', 3],
  4: ['LA', 2],
  6: ['RGBA', 4],
};

const PNG_SIGNATURE_BYTES = 8;

/** CRC-32 (PNG/zlib polynomial): Node's zlib.crc32 (Node 20.15+), else a table-driven one. */
const crc32: (data: Uint8Array) => number = (zlib as { crc32?: (data: Uint8Array) => number }).crc32 ?? tableCrc32;

let crcTable: Uint32Array | undefined;
export function tableCrc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Above this many decoded bytes the row filters are undone in JavaScript memory: the kernels'
 *  WebAssembly memory never shrinks, and a worker should not keep a huge image's worth of it. */
const SIMD_UNFILTER_MAX_BYTES = 32 << 20;

function typeOf(b: Uint8Array, at: number): string {
  return String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);
}

const u32 = (b: Uint8Array, i: number): number => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;

/** CRC over the chunk type and data, as stored after them. */
function crcMatches(b: Uint8Array, start: number, len: number): boolean {
  return crc32(b.subarray(start + 4, start + 8 + len)) === u32(b, start + 8 + len);
}

/** Decodes `bytes` if it is a plain 8-bit PNG of mode `expected` (what the header parser said);
 *  undefined otherwise. */
export function decodePlainPng(bytes: Uint8Array, expected: PilMode): DecodedImage | undefined {
  if (bytes.length < PNG_SIGNATURE_BYTES + 25) return undefined;
  let p = PNG_SIGNATURE_BYTES;
  // IHDR must come first.
  if (u32(bytes, p) !== 13 || typeOf(bytes, p + 4) !== 'IHDR' || !crcMatches(bytes, p, 13)) return undefined;
  const width = u32(bytes, p + 8);
  const height = u32(bytes, p + 12);
  const [depth, colourType, compression, filterMethod, interlace] = bytes.subarray(p + 16, p + 21);
  const layout = COLOUR_TYPES[colourType];
  if (!layout || depth !== 8 || compression !== 0 || filterMethod !== 0 || interlace !== 0) return undefined;
  const [mode, channels] = layout;
  if (mode !== expected || width === 0 || height === 0) return undefined;
  p += 25;

  const idat: Uint8Array[] = [];
  let idatEnded = false;
  for (;;) {
    if (p + 12 > bytes.length) return undefined; // no IEND
    const len = u32(bytes, p);
    if (len > bytes.length - p - 12) return undefined;
    const type = typeOf(bytes, p + 4);
    if (!crcMatches(bytes, p, len)) return undefined;
    if (type === 'IEND') break;
    if (type === 'IDAT') {
      if (idatEnded) return undefined; // IDAT chunks must be consecutive
      idat.push(bytes.subarray(p + 8, p + 8 + len));
    } else {
      if (idat.length > 0) idatEnded = true;
      // Animation (the first frame may not be the default image) and unknown critical chunks
      // are left to sharp. PLTE is only a suggested palette for these colour types.
      if (type === 'acTL' || (type !== 'PLTE' && (type.charCodeAt(0) & 0x20) === 0)) return undefined;
    }
    p += 12 + len;
  }
  if (idat.length === 0) return undefined;

  const rowBytes = width * channels;
  const expectedLength = height * (rowBytes + 1);
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat), { maxOutputLength: expectedLength + 1 });
  } catch {
    return undefined;
  }
  if (raw.length !== expectedLength) return undefined;
  const simd =
    (channels === 3 || channels === 4) &&
    height * rowBytes <= SIMD_UNFILTER_MAX_BYTES &&
    simdUnfilterAvailable(channels);
  const data = simd
    ? unfilterSimd(raw, height, rowBytes, channels as 3 | 4)
    : unfilter(raw, height, rowBytes, channels);
  return data ? { mode, width, height, channels, data } : undefined;
}

/**
 * Undoes the per-row filters (PNG spec §9) into a packed image; null on an invalid filter type.
 * `raw` holds height rows of [filter type, rowBytes filtered bytes]; `bpp` bytes per pixel.
 */
export function unfilter(raw: Uint8Array, height: number, rowBytes: number, bpp: number): Uint8Array | null {
  const out = new Uint8Array(height * rowBytes);
  for (let y = 0; y < height; y++) {
    const s = y * (rowBytes + 1) + 1;
    const o = y * rowBytes;
    const up = o - rowBytes; // previous output row (absent for y = 0: treated as zeros)
    switch (raw[s - 1]) {
      case 0:
        out.set(raw.subarray(s, s + rowBytes), o);
        break;
      case 1: // Sub
        for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i];
        for (let i = bpp; i < rowBytes; i++) out[o + i] = raw[s + i] + out[o + i - bpp];
        break;
      case 2: // Up
        if (y === 0) out.set(raw.subarray(s, s + rowBytes), o);
        else for (let i = 0; i < rowBytes; i++) out[o + i] = raw[s + i] + out[up + i];
        break;
      case 3: // Average
        if (y === 0) {
          for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i];
          for (let i = bpp; i < rowBytes; i++) out[o + i] = raw[s + i] + (out[o + i - bpp] >> 1);
        } else {
          for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i] + (out[up + i] >> 1);
          for (let i = bpp; i < rowBytes; i++) out[o + i] = raw[s + i] + ((out[o + i - bpp] + out[up + i]) >> 1);
        }
        break;
      case 4: // Paeth
        if (y === 0) {
          // With no row above, the predictor is always the left byte (Sub).
          for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i];
          for (let i = bpp; i < rowBytes; i++) out[o + i] = raw[s + i] + out[o + i - bpp];
        } else {
          for (let i = 0; i < bpp; i++) out[o + i] = raw[s + i] + out[up + i];
          for (let i = bpp; i < rowBytes; i++) {
            const a = out[o + i - bpp];
            const b = out[up + i];
            const c = out[up + i - bpp];
            const pa = b > c ? b - c : c - b;
            const pb = a > c ? a - c : c - a;
            const t = a + b - c - c;
            const pc = t < 0 ? -t : t;
            out[o + i] = raw[s + i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
          }
        }
        break;
      default:
        return null;
    }
  }
  return out;
}
