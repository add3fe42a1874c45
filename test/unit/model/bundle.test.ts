/** Bundle writing and verification: manifest contents, and every kind of damage failing with a
 *  BundleError that names the file and the problem. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  BundleError,
  loadBundle,
  MANIFEST_FILE,
  writeBundle,
  type BundleManifest,
} from '../../../server/src/model/bundle';
import { WeightsError } from '../../../server/src/model/expected-weights';
import { readSafetensors } from '../../../server/src/checkpoint/safetensors';
import type { StateDict } from '../../../server/src/model/state-dict';
import { readOnnxSignature } from '../../../server/src/onnx/inspect';
import { buildGoldenBundle, GOLDEN_VOCAB, goldenConfig, goldenExpected } from '../../helpers/golden-bundles';
import { describeGolden, goldenPath } from '../../helpers/shared';

describeGolden('model bundles', () => {
  let tmp: string;
  let good: string;
  let sd: StateDict;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-bundle-'));
    good = await buildGoldenBundle('tiny-gelu', path.join(tmp, 'good'));
    sd = await readSafetensors(goldenPath('model', 'tiny-gelu', 'open_clip_model.safetensors'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A fresh copy of the good bundle to damage. */
  function copy(label: string): string {
    const dir = path.join(tmp, label);
    fs.cpSync(good, dir, { recursive: true });
    return dir;
  }
  const readManifest = (dir: string): BundleManifest =>
    JSON.parse(fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8'));
  const writeManifest = (dir: string, m: unknown): void =>
    fs.writeFileSync(path.join(dir, MANIFEST_FILE), JSON.stringify(m));

  test('the manifest records config, logit scale, signatures and checksummed files', async () => {
    const b = await loadBundle(good);
    const m = b.manifest;
    expect(m.format_version).toBe(1);
    expect(m).toMatchObject({
      name: 'tiny-gelu',
      version: 'golden',
      demo: false,
      precision: 'fp32',
      embed_dim: 32,
      image_size: 64,
      context_length: 77,
    });
    expect(m.logit_scale).toBeCloseTo(Math.log(100), 6);
    expect(m.logit_scale_exp).toBe(Math.fround(goldenExpected('tiny-gelu').values.logit_scale_exp));
    expect(m.towers.visual.inputs).toEqual([{ name: 'pixel_values', dtype: 'float32', shape: ['batch', 3, 64, 64] }]);
    expect(m.towers.textual.inputs).toEqual([{ name: 'input_ids', dtype: 'int64', shape: ['batch', 'sequence'] }]);
    expect(m.towers.textual.outputs).toEqual([{ name: 'text_embeds', dtype: 'float32', shape: ['batch', 32] }]);
    expect(m.files.vocab.format).toBe('bpe-merges-gz');
    expect(m.files.visual_data?.path).toBe('visual.onnx.data');
    expect(b.paths.visual).toBe(path.join(good, 'visual.onnx'));
    // Weights live in the external data file; the graph file stays small.
    expect(m.files.textual.bytes).toBeLessThan(100_000);
    expect(m.files.textual_data!.bytes).toBeGreaterThan(49408 * 32 * 4);
    expect(readOnnxSignature(b.paths.textual).externalLocations).toEqual(['textual.onnx.data']);
  });

  test('a corrupted file is a checksum mismatch naming it', async () => {
    const dir = copy('corrupt');
    const f = path.join(dir, 'visual.onnx.data');
    const bytes = fs.readFileSync(f);
    bytes[bytes.length >> 1] ^= 0xff;
    fs.writeFileSync(f, bytes);
    await expect(loadBundle(dir)).rejects.toThrow(BundleError);
    await expect(loadBundle(dir)).rejects.toThrow(/^visual\.onnx\.data: checksum mismatch/);
    // verify: false skips hashing (sizes still checked), for fast restarts of trusted bundles.
    await expect(loadBundle(dir, { verify: false })).resolves.toBeDefined();
  });

  test('a missing or truncated file is named', async () => {
    const dir = copy('missing');
    fs.rmSync(path.join(dir, 'textual.onnx'));
    await expect(loadBundle(dir)).rejects.toThrow(/^textual\.onnx: missing file/);
    const dir2 = copy('truncated');
    fs.truncateSync(path.join(dir2, 'vocab.bpe.txt.gz'), 100);
    await expect(loadBundle(dir2, { verify: false })).rejects.toThrow(/^vocab\.bpe\.txt\.gz: size mismatch/);
    const dir3 = copy('no-manifest');
    fs.rmSync(path.join(dir3, MANIFEST_FILE));
    await expect(loadBundle(dir3)).rejects.toThrow(/^clipserve\.json: missing manifest/);
  });

  test('bad manifest fields are named', async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const cases: [string, (m: Record<string, any>) => void, RegExp][] = [
      ['name', (m) => (m.name = ''), /field "name" must be a non-empty string/],
      ['precision', (m) => (m.precision = 'int4'), /field "precision"/],
      ['int8 record', (m) => (m.precision = 'int8'), /field "int8" must be an object/],
      ['version', (m) => (m.format_version = 7), /unsupported format_version 7/],
      ['embed', (m) => (m.embed_dim = 64), /field "embed_dim" is 64 but model_cfg implies 32/],
      ['sha', (m) => (m.files.visual.sha256 = 'xyz'), /field "files\.visual\.sha256" must be a hex SHA-256/],
      ['escape', (m) => (m.files.vocab.path = '../../etc/passwd'), /must stay inside the bundle/],
      ['vocabfmt', (m) => (m.files.vocab.format = 'json'), /files\.vocab\.format/],
    ];
    for (const [label, mutate, re] of cases) {
      const dir = copy(`field-${label}`);
      const m = readManifest(dir) as unknown as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      mutate(m);
      writeManifest(dir, m);
      await expect(loadBundle(dir, { verify: false })).rejects.toThrow(re);
      await expect(loadBundle(dir, { verify: false })).rejects.toThrow(/^clipserve\.json: /);
    }
    const dir = copy('not-json');
    fs.writeFileSync(path.join(dir, MANIFEST_FILE), '{ nope');
    await expect(loadBundle(dir)).rejects.toThrow(/^clipserve\.json: not valid JSON/);
  });

  test('a tower whose ONNX shapes disagree with model_cfg is a wrong-shape error naming it', async () => {
    const dir = copy('wrong-shape');
    const m = readManifest(dir);
    // Claim a 32-px input: the visual.onnx still takes 64 px.
    m.model_cfg.vision_cfg.image_size = 32;
    m.preprocess_cfg.size = 32;
    m.image_size = 32;
    writeManifest(dir, m);
    await expect(loadBundle(dir, { verify: false })).rejects.toThrow(
      /^visual\.onnx: wrong shape: .*pixel_values float32 \[batch, 3, 64, 64\]/,
    );
  });

  test('writeBundle names missing and mis-shaped state-dict keys', async () => {
    const broken: StateDict = new Map(sd);
    broken.delete('visual.ln_post.bias');
    broken.delete('transformer.resblocks.1.attn.in_proj_weight');
    broken.set('text_projection', { shape: [32, 16], data: new Float32Array(512) });
    const p = writeBundle({
      outDir: path.join(tmp, 'broken'),
      name: 'x',
      version: '1',
      config: goldenConfig('tiny-gelu'),
      stateDict: broken,
      vocabFile: GOLDEN_VOCAB,
    });
    await expect(p).rejects.toThrow(WeightsError);
    await expect(p).rejects.toThrow(BundleError);
    await expect(p).rejects.toThrow(
      /missing 2 key\(s\): visual\.ln_post\.bias, transformer\.resblocks\.1\.attn\.in_proj_weight/,
    );
    await expect(p).rejects.toThrow(/text_projection: expected \[32, 32\], got \[32, 16\]/);
    expect(fs.existsSync(path.join(tmp, 'broken'))).toBe(false);
  });

  test('writeBundle refuses a non-empty output directory and a non-gzip vocabulary', async () => {
    const base = { name: 'x', version: '1', config: goldenConfig('tiny-gelu'), stateDict: sd };
    await expect(writeBundle({ ...base, outDir: good, vocabFile: GOLDEN_VOCAB })).rejects.toThrow(
      /exists and is not empty/,
    );
    const txt = path.join(tmp, 'vocab.txt');
    fs.writeFileSync(txt, 'not gzip');
    await expect(writeBundle({ ...base, outDir: path.join(tmp, 'v'), vocabFile: txt })).rejects.toThrow(
      /not a gzip file/,
    );
  });

  test('progress is reported up to the total weight bytes', async () => {
    const seen: [number, number][] = [];
    await writeBundle({
      outDir: path.join(tmp, 'progress'),
      name: 'p',
      version: '1',
      config: goldenConfig('tiny-gelu'),
      stateDict: sd,
      vocabFile: GOLDEN_VOCAB,
      precision: 'fp16',
      onProgress: (d, t) => seen.push([d, t]),
    });
    const [done, total] = seen[seen.length - 1];
    expect(done).toBe(total);
    expect(total).toBe((1762593 - 1) * 2); // every parameter but logit_scale, 2 bytes each
    expect(seen.every(([d], i) => i === 0 || d >= seen[i - 1][0])).toBe(true);
  });
});
