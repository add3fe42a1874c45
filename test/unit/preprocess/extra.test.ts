/**
 * Formats, modes and preprocess_cfg options beyond the goldens (GIF, TIFF, PNG bit depths and tRNS,
 * greyscale / non-Adobe CMYK JPEG, WebP with alpha; resize_mode longest/squash, bilinear,
 * fill_color, other sizes). Expected outputs were produced by the reference stack itself
 * (Pillow 9.4.0 + torchvision/open_clip transform logic) with
 * test/fixtures/preprocess/make_fixtures.py; each case pins the SHA-256 of the uint8 RGB crop.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { resolveConfig, type PreprocessConfig } from '../../../server/src/model/config';
import { preprocessImage } from '../../../server/src/preprocess';

const DIR = path.join(__dirname, '..', '..', 'fixtures', 'preprocess');

interface FixtureCase {
  file: string;
  pil_mode: string;
  cfg: Partial<PreprocessConfig>;
  rgb_crop_sha256: string;
  rgb_mean: [number, number, number];
}

const { cases } = JSON.parse(fs.readFileSync(path.join(DIR, 'cases.json'), 'utf8')) as { cases: FixtureCase[] };

/** Exact inverse of ToTensor+Normalize (see golden README): recovers the uint8 RGB crop, HWC. */
function toRgbCrop(t: Float32Array, cfg: PreprocessConfig): Uint8Array {
  const n = cfg.size * cfg.size;
  const hwc = new Uint8Array(n * 3);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < n; p++) hwc[p * 3 + c] = Math.round((t[c * n + p] * cfg.std[c] + cfg.mean[c]) * 255);
  }
  return hwc;
}

describe('preprocess beyond the goldens (reference: Pillow 9.4 via make_fixtures.py)', () => {
  test('fixture list is present', () => {
    expect(cases.length).toBeGreaterThan(50);
  });

  const label = (c: FixtureCase): string => `${c.file} [${c.pil_mode}] ${JSON.stringify(c.cfg)}`;
  test.each(cases.map((c) => [label(c), c] as const))('%s', async (_l, c) => {
    const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: c.cfg }).preprocess_cfg;
    const out = await preprocessImage(fs.readFileSync(path.join(DIR, c.file)), cfg);
    expect(out.length).toBe(3 * cfg.size * cfg.size);
    const rgb = toRgbCrop(out, cfg);
    const mean = [0, 1, 2].map((ch) => {
      let s = 0;
      for (let p = ch; p < rgb.length; p += 3) s += rgb[p];
      return Math.round((s / (rgb.length / 3)) * 1e4) / 1e4;
    });
    // The channel means localise a mismatch; the hash pins every pixel.
    expect(mean).toEqual(c.rgb_mean);
    expect(createHash('sha256').update(rgb).digest('hex')).toBe(c.rgb_crop_sha256);
  });
});
