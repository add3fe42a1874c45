/**
 * Every reference image in golden/preprocess must reproduce the OpenCLIP tensor. Errors are
 * reported in [0,1] pixel units (|Δtensor| × std); lossless inputs must match within 1/255
 * (the implementation aims at, and currently reaches, bit-exactness), JPEG within 2/255.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { describeGolden, goldenPath, readF32 } from '../helpers/shared';
import { resolveConfig } from '../../server/src/model/config';
import { preprocessImage } from '../../server/src/preprocess';

interface GoldenCase {
  name: string;
  image_file: string;
  tensor_file: string;
  format: string;
  pil_mode: string;
  tensor_shape: number[];
  transform_trace: { rgb_crop_sha256: string };
}

const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;

/** Inverts Normalize exactly (README: u8 = round((x*std + mean)*255)) to compare the RGB crop hash. */
function rgbCropSha(t: Float32Array, size: number): string {
  const hwc = new Uint8Array(size * size * 3);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < size * size; p++)
      hwc[p * 3 + c] = Math.round((t[c * size * size + p] * cfg.std[c] + cfg.mean[c]) * 255);
  }
  return createHash('sha256').update(hwc).digest('hex');
}

describeGolden('preprocess goldens (open_clip image_transform(224), Pillow 9.4)', () => {
  const index = fs.existsSync(goldenPath('preprocess', 'index.json'))
    ? (JSON.parse(fs.readFileSync(goldenPath('preprocess', 'index.json'), 'utf8')) as { cases: GoldenCase[] })
    : { cases: [] };

  test('index lists the cases', () => {
    expect(index.cases.length).toBeGreaterThanOrEqual(22);
  });

  const report: string[] = [];
  afterAll(() => {
    console.log(`preprocess golden errors in [0,1] pixel units (max / mean):\n${report.join('\n')}`);
  });

  test.each(index.cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const bytes = fs.readFileSync(goldenPath('preprocess', c.image_file));
    const out = await preprocessImage(bytes, cfg);
    const ref = readF32(goldenPath('preprocess', c.tensor_file));
    expect(out.length).toBe(ref.length);
    const plane = ref.length / 3;
    let max = 0;
    let sum = 0;
    for (let i = 0; i < ref.length; i++) {
      const d = Math.abs(out[i] - ref[i]) * cfg.std[Math.floor(i / plane)];
      sum += d;
      if (d > max) max = d;
    }
    const mean = sum / ref.length;
    report.push(
      `  ${c.name.padEnd(26)} ${c.pil_mode.padEnd(5)} max ${max.toExponential(3)} mean ${mean.toExponential(3)}`,
    );
    const lossy = c.format === 'JPEG' || /lossy/.test(c.name);
    expect(max).toBeLessThanOrEqual((lossy ? 2 : 1) / 255 + 1e-7);
    if (max === 0) expect(rgbCropSha(out, 224)).toBe(c.transform_trace.rgb_crop_sha256);
  });
});
