/** Seeded random models: open_clip's init statistics, determinism, `clipserve init-model` and the
 *  demo bundle. CLI cases run the compiled dist/ (npm test builds it first). */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { loadBundle } from '../../../server/src/model/bundle';
import { ARCH_PRESETS } from '../../../server/src/model/config';
import { ensureDemoBundle, DEMO_BUNDLE_NAME } from '../../../server/src/model/demo';
import { validateStateDict } from '../../../server/src/model/expected-weights';
import { randomStateDict, Rng } from '../../../server/src/model/random-init';
import { loadModel } from '../../../server/src/runtime/model';
import { DEMO_VOCAB_SIZE } from '../../../server/src/tokenizer';
import { PACKAGE_ROOT } from '../../../server/src/util/paths';

const run = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

function stats(a: Float32Array): { mean: number; std: number; maxAbs: number } {
  let s = 0;
  let ss = 0;
  let m = 0;
  for (const v of a) {
    s += v;
    ss += v * v;
    m = Math.max(m, Math.abs(v));
  }
  const mean = s / a.length;
  return { mean, std: Math.sqrt(ss / a.length - mean * mean), maxAbs: m };
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-init-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('random initialisation', () => {
  const cfg = ARCH_PRESETS.tiny;
  const sd = randomStateDict(cfg, 42);

  test('the PRNG is deterministic per (seed, stream) and roughly standard normal', () => {
    const a = new Rng(1, 'x');
    const b = new Rng(1, 'x');
    const c = new Rng(2, 'x');
    const d = new Rng(1, 'y');
    const xs = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(xs);
    expect(Array.from({ length: 5 }, () => c.nextU32())).not.toEqual(xs);
    expect(Array.from({ length: 5 }, () => d.nextU32())).not.toEqual(xs);
    const n = Float32Array.from({ length: 200_000 }, () => a.normal());
    const st = stats(n);
    expect(Math.abs(st.mean)).toBeLessThan(0.01);
    expect(Math.abs(st.std - 1)).toBeLessThan(0.01);
  });

  test('follows open_clip std values and constants', () => {
    validateStateDict(sd, cfg);
    const near = (key: string, std: number): void => {
      const st = stats(sd.get(key)!.data);
      expect([key, Math.abs(st.std / std - 1) < 0.05]).toEqual([key, true]);
      expect(Math.abs(st.mean)).toBeLessThan(std * 0.1);
    };
    const w = cfg.text_cfg.width;
    near('token_embedding.weight', 0.02);
    near('positional_embedding', 0.01);
    near('transformer.resblocks.0.attn.in_proj_weight', w ** -0.5);
    near('transformer.resblocks.1.mlp.c_fc.weight', (2 * w) ** -0.5);
    near('transformer.resblocks.1.mlp.c_proj.weight', w ** -0.5 * (2 * cfg.text_cfg.layers) ** -0.5);
    near('text_projection', w ** -0.5);
    near('visual.positional_embedding', cfg.vision_cfg.width ** -0.5);
    // PyTorch defaults in the image tower: xavier_uniform for in_proj, kaiming_uniform(a=√5) for conv1.
    const xavier = Math.sqrt(6 / (3 * 64 + 64));
    const inProj = stats(sd.get('visual.transformer.resblocks.0.attn.in_proj_weight')!.data);
    expect(inProj.maxAbs).toBeLessThanOrEqual(xavier);
    expect(Math.abs(inProj.std / (xavier / Math.sqrt(3)) - 1)).toBeLessThan(0.05);
    expect(stats(sd.get('visual.conv1.weight')!.data).maxAbs).toBeLessThanOrEqual(1 / Math.sqrt(3 * 16 * 16));
    expect(Array.from(new Set(sd.get('visual.ln_pre.weight')!.data))).toEqual([1]);
    expect(Array.from(new Set(sd.get('ln_final.bias')!.data))).toEqual([0]);
    expect(Array.from(new Set(sd.get('transformer.resblocks.0.attn.in_proj_bias')!.data))).toEqual([0]);
    expect(sd.get('logit_scale')!.data[0]).toBeCloseTo(Math.log(1 / 0.07), 6);
  });

  test('the same seed gives the same weights, another seed others', () => {
    const again = randomStateDict(cfg, 42);
    const other = randomStateDict(cfg, 43);
    for (const key of ['visual.conv1.weight', 'token_embedding.weight', 'visual.proj']) {
      expect(Buffer.from(again.get(key)!.data.buffer).equals(Buffer.from(sd.get(key)!.data.buffer))).toBe(true);
      expect(Buffer.from(other.get(key)!.data.buffer).equals(Buffer.from(sd.get(key)!.data.buffer))).toBe(false);
    }
    expect(() => randomStateDict(cfg, -1)).toThrow(RangeError);
  });
});

describe('clipserve init-model', () => {
  test('writes a loadable tiny bundle with the demo vocabulary, reproducibly', async () => {
    const a = path.join(tmp, 'a');
    const b = path.join(tmp, 'b');
    const { stdout } = await run(process.execPath, [CLI, 'init-model', '--arch', 'tiny', '--seed', '7', '--out', a]);
    expect(stdout).toMatch(/wrote random-tiny \(tiny, seed 7, fp32\)/);
    await run(process.execPath, [
      CLI,
      'init-model',
      '--arch',
      'tiny',
      '--seed',
      '7',
      '--out',
      b,
      '--precision',
      'fp16',
      '--name',
      'half',
    ]);
    const ba = await loadBundle(a);
    const bb = await loadBundle(b);
    expect(ba.manifest.model_cfg.text_cfg.vocab_size).toBe(DEMO_VOCAB_SIZE);
    expect(ba.manifest).toMatchObject({
      name: 'random-tiny',
      version: 'seed-7',
      demo: false,
      precision: 'fp32',
      source: { kind: 'random-init', arch: 'tiny', seed: 7 },
    });
    expect(bb.manifest).toMatchObject({ name: 'half', precision: 'fp16' });
    expect(bb.manifest.files.visual_data!.bytes).toBeLessThan(ba.manifest.files.visual_data!.bytes * 0.55);

    const c = path.join(tmp, 'c');
    await run(process.execPath, [CLI, 'init-model', '--arch', 'tiny', '--seed', '7', '--out', c]);
    const bc = await loadBundle(c);
    for (const k of ['visual', 'visual_data', 'textual', 'textual_data', 'vocab'] as const)
      expect(bc.manifest.files[k]!.sha256).toBe(ba.manifest.files[k]!.sha256);

    const model = await loadModel(a, { provider: 'cpu', intraOpThreads: 1, preprocessWorkers: 1 });
    try {
      const { ids } = model.tokenizer.tokenizeBatch(['a red heart icon', 'a photo of a dog'], 77);
      const feats = await model.encodeText(ids, 2);
      expect(feats.length).toBe(2 * 32);
      expect(feats.every(Number.isFinite)).toBe(true);
    } finally {
      await model.close();
    }
  });

  test('bad flags fail with a clear message', async () => {
    await expect(
      run(process.execPath, [CLI, 'init-model', '--arch', 'ViT-H-14', '--out', path.join(tmp, 'x')]),
    ).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/--arch must be one of tiny, ViT-B-32, ViT-L-14/),
    });
    await expect(
      run(process.execPath, [CLI, 'init-model', '--arch', 'tiny', '--seed', 'abc', '--out', path.join(tmp, 'x')]),
    ).rejects.toMatchObject({ stderr: expect.stringMatching(/--seed must be an integer/) });
  });
});

describe('demo bundle', () => {
  test('is built once, atomically, and reused', async () => {
    const cache = path.join(tmp, 'cache');
    // Two concurrent first starts: both end with the same complete bundle.
    const [d1, d2] = await Promise.all([ensureDemoBundle(cache), ensureDemoBundle(cache)]);
    expect(d1).toBe(path.join(cache, DEMO_BUNDLE_NAME));
    expect(d2).toBe(d1);
    const manifestPath = path.join(d1, 'clipserve.json');
    const before = fs.statSync(manifestPath).mtimeMs;
    expect(await ensureDemoBundle(cache)).toBe(d1);
    expect(fs.statSync(manifestPath).mtimeMs).toBe(before);
    const b = await loadBundle(d1);
    expect(b.manifest).toMatchObject({ demo: true, name: 'clipserve-demo' });
    expect(fs.readdirSync(cache)).toEqual([DEMO_BUNDLE_NAME]); // no temp directories left behind
  });
});
