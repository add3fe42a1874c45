/**
 * Reading a bundle's weights back from its ONNX files (what a fine-tuned version is written from):
 * exactly the state dict it was written from (fp32), within half precision (fp16), and writing the
 * read-back weights again reproduces the weight files byte for byte.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadBundle, writeBundle } from '../../../server/src/model/bundle';
import { ARCH_PRESETS, resolveConfig } from '../../../server/src/model/config';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { randomStateDict } from '../../../server/src/model/random-init';
import { readBundleStateDict } from '../../../server/src/model/bundle-weights';
import { BundleError } from '../../../server/src/model/errors';

describe('readBundleStateDict', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-weights-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('returns the exact fp32 state dict, and rewriting it reproduces the weight files', async () => {
    const m = await writeRandomBundle({ arch: 'tiny', seed: 4, outDir: path.join(tmp, 'fp32') });
    const bundle = await loadBundle(path.join(tmp, 'fp32'));
    const sd = readBundleStateDict(bundle);
    const expected = randomStateDict(resolveConfig({ model_cfg: m.model_cfg }).model_cfg, 4);
    expect([...sd.keys()].sort()).toEqual([...expected.keys()].sort());
    for (const [k, t] of expected) {
      expect(sd.get(k)!.shape).toEqual(t.shape);
      expect(Buffer.from(sd.get(k)!.data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
    }
    const again = await writeBundle({
      outDir: path.join(tmp, 'again'),
      name: m.name,
      version: m.version,
      config: { model_cfg: m.model_cfg, preprocess_cfg: m.preprocess_cfg },
      stateDict: sd,
      vocabFile: bundle.paths.vocab,
    });
    expect(again.files.visual_data!.sha256).toBe(m.files.visual_data!.sha256);
    expect(again.files.textual_data!.sha256).toBe(m.files.textual_data!.sha256);
  });

  it('reads fp16 bundles back to float32 within half precision', async () => {
    await writeRandomBundle({ arch: 'tiny', seed: 4, outDir: path.join(tmp, 'fp16'), precision: 'fp16' });
    const sd = readBundleStateDict(await loadBundle(path.join(tmp, 'fp16')));
    const expected = randomStateDict(
      resolveConfig({
        model_cfg: {
          ...ARCH_PRESETS.tiny,
          text_cfg: { ...ARCH_PRESETS.tiny.text_cfg, vocab_size: sd.get('token_embedding.weight')!.shape[0] },
        },
      }).model_cfg,
      4,
    );
    const proj = sd.get('visual.proj')!.data;
    const want = expected.get('visual.proj')!.data;
    for (let i = 0; i < want.length; i++)
      expect(Math.abs(proj[i] - want[i])).toBeLessThanOrEqual(Math.abs(want[i]) * 1e-3 + 1e-7);
  });

  it('names the file when the external data is cut short', async () => {
    await writeRandomBundle({ arch: 'tiny', seed: 4, outDir: path.join(tmp, 'cut') });
    const bundle = await loadBundle(path.join(tmp, 'cut'));
    fs.truncateSync(path.join(tmp, 'cut', 'visual.onnx.data'), 1000);
    expect(() => readBundleStateDict(bundle)).toThrow(BundleError);
    expect(() => readBundleStateDict(bundle)).toThrow(/visual\.onnx\.data/);
  });
});
