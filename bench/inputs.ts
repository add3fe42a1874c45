/**
 * Synthetic benchmark inputs, deterministic so runs compare: caption-like sentences, a photo-like
 * JPEG and an icon-like RGBA PNG (both made with sharp).
 */
import sharp from 'sharp';
import { demoCorpus, dressCaptions } from '../server/src/tokenizer/demo-vocab';

/**
 * Caption-like sentences: a different slice of the generator than the demo vocabulary learns
 * from, dressed up the way real captions are (sentence case, a trailing period here and there,
 * typographic quotes, a hashtag).
 */
export function benchCaptions(count: number): string[] {
  return dressCaptions(demoCorpus(count + 6000).slice(6000));
}

/** Photo-like RGB pixels: smooth gradients, edges and sensor-like noise of amplitude `noise`. */
export function photoPixels(w: number, h: number, noise = 17): Buffer {
  const raw = Buffer.alloc(w * h * 3);
  let seed = 12345;
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 3) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = (seed >>> 24) % noise;
      const edge = ((x >> 6) + (y >> 6)) & 1 ? 40 : 0;
      raw[i] = Math.min(255, ((x * 255) / w + n + edge) | 0);
      raw[i + 1] = Math.min(255, ((y * 255) / h + n) | 0);
      raw[i + 2] = Math.min(255, (128 + 100 * Math.sin(x / 90 + y / 130) + n) | 0);
    }
  }
  return raw;
}

/** A photo-like JPEG (compresses like a photo). */
export async function makePhoto(w: number, h: number, quality = 90): Promise<Buffer> {
  return sharp(photoPixels(w, h), { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality })
    .toBuffer();
}

/** A noise-free photo-like PNG (gradients and edges: compresses like a rendered image); with
 *  `alpha`, an RGBA disc whose edge fades out over 30 px and whose corners are fully transparent. */
export async function makePhotoPng(size: number, alpha: boolean): Promise<Buffer> {
  const rgb = photoPixels(size, size, 1);
  if (!alpha)
    return sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
      .png({ adaptiveFiltering: true })
      .toBuffer();
  const rgba = Buffer.alloc(size * size * 4);
  const r0 = size * 0.39;
  const r1 = size * 0.45;
  for (let p = 0; p < size * size; p++) {
    rgba[4 * p] = rgb[3 * p];
    rgba[4 * p + 1] = rgb[3 * p + 1];
    rgba[4 * p + 2] = rgb[3 * p + 2];
    const d = Math.hypot((p % size) - size / 2, Math.floor(p / size) - size / 2);
    rgba[4 * p + 3] = d < r0 ? 255 : d > r1 ? 0 : Math.round((255 * (r1 - d)) / (r1 - r0));
  }
  return sharp(rgba, { raw: { width: size, height: size, channels: 4 } })
    .png({ adaptiveFiltering: true })
    .toBuffer();
}

/** An icon-like RGBA PNG: flat shapes with anti-aliased alpha edges. */
export async function makeIcon(size: number): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">
    <circle cx="${size / 2}" cy="${size / 2}" r="${size * 0.42}" fill="#3b82f6"/>
    <rect x="${size * 0.3}" y="${size * 0.3}" width="${size * 0.4}" height="${size * 0.4}" rx="${size * 0.05}" fill="#fde047"/>
  </svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** The image kinds the bench sends; `small` is a model-sized JPEG whose decode costs little. */
export type BenchImageKind = 'small' | 'icon' | 'photo';

export async function makeBenchImage(kind: BenchImageKind, modelSize: number): Promise<Buffer> {
  switch (kind) {
    case 'small':
      return makePhoto(modelSize, modelSize);
    case 'icon':
      return makeIcon(512);
    case 'photo':
      return makePhoto(2000, 1500);
  }
}
