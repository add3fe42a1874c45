/**
 * Acceptance for `clipserve convert`: every golden model converted from its safetensors, from a
 * torch.save .bin this test writes, and (tiny-gelu) from the trainer's epoch_3.pt, runs through
 * onnxruntime to the reference features (1e-4) and logits (1e-3).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { readCheckpointFile } from '../../server/src/checkpoint';
import { convertCheckpoint, defaultModelName } from '../../server/src/checkpoint/convert';
import { loadBundle } from '../../server/src/model/bundle';
import { loadModel } from '../../server/src/runtime/model';
import { ClipTokenizer } from '../../server/src/tokenizer';
import { describeGolden, goldenPath, readF32, readI64 } from '../helpers/shared';
import { saveStateDict } from '../helpers/torch-save';
import { writeHuggingFaceVocab } from '../helpers/hf-vocab';

const MODELS = ['tiny-gelu', 'tiny-quickgelu', 'small-l14like'];
const VOCAB = () => goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz');
const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-convert-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Expected {
  shapes: Record<string, number[]>;
  values: Record<string, number[][] | number>;
}

function l2rows(x: Float32Array, dim: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += x[r * dim + d] ** 2;
    const n = Math.max(Math.sqrt(s), 1e-12);
    for (let d = 0; d < dim; d++) out[r * dim + d] = x[r * dim + d] / n;
  }
  return out;
}

function maxAbsDiff(got: ArrayLike<number>, want: number[][]): number {
  const flat = want.flat();
  expect(got.length).toBe(flat.length);
  let m = 0;
  flat.forEach((v, i) => (m = Math.max(m, Math.abs(got[i] - v))));
  return m;
}

/** Runs a bundle on the golden inputs and checks features and logits against expected.json. */
async function checkBundle(bundleDir: string, model: string): Promise<void> {
  const expected = JSON.parse(fs.readFileSync(goldenPath('model', model, 'expected.json'), 'utf8')) as Expected;
  const images = readF32(goldenPath('model', model, 'inputs_images.f32'));
  const ids = Int32Array.from(readI64(goldenPath('model', model, 'inputs_text_ids.i64')), (v) => Number(v));
  const [nImg, embed] = expected.shapes.image_features;
  const nTxt = expected.shapes.text_features[0];
  const m = await loadModel(bundleDir, { provider: 'cpu', preprocessWorkers: 1, intraOpThreads: 1 });
  try {
    const img = await m.encodeImage(images, nImg);
    const txt = await m.encodeText(ids, nTxt);
    expect(maxAbsDiff(img, expected.values.image_features as number[][])).toBeLessThan(1e-4);
    expect(maxAbsDiff(txt, expected.values.text_features as number[][])).toBeLessThan(1e-4);
    expect(Math.abs(m.info.logitScale - (expected.values.logit_scale_exp as number))).toBeLessThan(1e-3);
    const a = l2rows(img, embed);
    const b = l2rows(txt, embed);
    const logits = new Float64Array(nImg * nTxt);
    for (let i = 0; i < nImg; i++) {
      for (let j = 0; j < nTxt; j++) {
        let s = 0;
        for (let d = 0; d < embed; d++) s += a[i * embed + d] * b[j * embed + d];
        logits[i * nTxt + j] = m.info.logitScale * s;
      }
    }
    expect(maxAbsDiff(logits, expected.values.logits_per_image as number[][])).toBeLessThan(1e-3);
  } finally {
    await m.close();
  }
}

describeGolden('convert: golden checkpoints → bundles → reference outputs', () => {
  test.each(MODELS)('%s from open_clip_model.safetensors', async (model) => {
    const out = path.join(tmp, `${model}-st`);
    const r = await convertCheckpoint({ input: goldenPath('model', model), outDir: out, vocab: VOCAB() });
    expect(r.name).toBe(model);
    expect(r.source.format).toBe('safetensors');
    const bundle = await loadBundle(out);
    expect(bundle.manifest.name).toBe(model);
    expect(bundle.manifest.source.format).toBe('safetensors');
    await checkBundle(out, model);
  });

  test.each(MODELS)('%s from a torch.save .bin written by this test (trainer layout, OrderedDict)', async (model) => {
    const dir = path.join(tmp, `${model}-bin-src`);
    fs.mkdirSync(dir);
    fs.copyFileSync(goldenPath('model', model, 'open_clip_config.json'), path.join(dir, 'open_clip_config.json'));
    // The vocabulary sits beside the checkpoint, so no --vocab is needed.
    fs.copyFileSync(VOCAB(), path.join(dir, 'bpe_simple_vocab_16e6.txt.gz'));
    const { stateDict } = await readCheckpointFile(goldenPath('model', model, 'open_clip_model.safetensors'));
    await saveStateDict(path.join(dir, 'open_clip_pytorch_model.bin'), stateDict, {
      orderedDict: true,
      archiveName: 'archive',
    });
    const out = path.join(tmp, `${model}-bin`);
    const r = await convertCheckpoint({ input: dir, outDir: out, precision: 'fp32', version: '7' });
    expect(r.source.format).toBe('torch-zip');
    expect((await loadBundle(out)).manifest.version).toBe('7');
    await checkBundle(out, model);
  });

  test('tiny-gelu from the golden .bin and from epoch_3.pt with --config', async () => {
    const dir = goldenPath('model', 'tiny-gelu');
    const outBin = path.join(tmp, 'tg-golden-bin');
    await convertCheckpoint({ input: path.join(dir, 'open_clip_pytorch_model.bin'), outDir: outBin, vocab: VOCAB() });
    await checkBundle(outBin, 'tiny-gelu');
    const outEpoch = path.join(tmp, 'tg-epoch');
    const r = await convertCheckpoint({
      input: path.join(dir, 'epoch_3.pt'),
      config: path.join(dir, 'open_clip_config.json'),
      outDir: outEpoch,
      vocab: VOCAB(),
    });
    expect(r.name).toBe('epoch_3');
    await checkBundle(outEpoch, 'tiny-gelu');
  });

  test('vocabulary: HF vocab.json + merges.txt works, a wrong size or a missing vocab fails clearly', async () => {
    const tok = ClipTokenizer.fromMergesFile(VOCAB());
    const hf = path.join(tmp, 'hf-vocab');
    fs.mkdirSync(hf);
    writeHuggingFaceVocab(tok, hf);
    const out = path.join(tmp, 'tg-hf-vocab');
    await convertCheckpoint({
      input: goldenPath('model', 'tiny-gelu'),
      outDir: out,
      vocab: path.join(hf, 'vocab.json'),
    });
    const bundled = ClipTokenizer.fromMergesFile((await loadBundle(out)).paths.vocab);
    expect(bundled.vocabSize).toBe(49408);
    expect(Array.from(bundled.tokenize('a photo of a cat').ids)).toEqual(
      Array.from(tok.tokenize('a photo of a cat').ids),
    );

    // A vocabulary with fewer merges than the model's 49408 tokens.
    const small = path.join(tmp, 'small_vocab.txt');
    const lines = zlib.gunzipSync(fs.readFileSync(VOCAB())).toString('utf8').split('\n').slice(0, 1001);
    fs.writeFileSync(small, lines.join('\n') + '\n');
    await expect(
      convertCheckpoint({ input: goldenPath('model', 'tiny-gelu'), outDir: path.join(tmp, 'x1'), vocab: small }),
    ).rejects.toThrow(/1514 tokens but the model's text_cfg.vocab_size is 49408/);
    await expect(
      convertCheckpoint({ input: goldenPath('model', 'tiny-gelu'), outDir: path.join(tmp, 'x2') }),
    ).rejects.toThrow(/--vocab/);
    expect(fs.existsSync(path.join(tmp, 'x1'))).toBe(false);
  });

  test('CLI: clipserve convert epoch_3.pt --config --vocab --precision fp16 prints the bundle path', async () => {
    const dir = goldenPath('model', 'tiny-gelu');
    const out = path.join(tmp, 'cli-fp16');
    const { stdout } = await promisify(execFile)(process.execPath, [
      CLI,
      'convert',
      path.join(dir, 'epoch_3.pt'),
      '--config',
      path.join(dir, 'open_clip_config.json'),
      '--vocab',
      VOCAB(),
      '--out',
      out,
      '--precision',
      'fp16',
      '--name',
      'tiny',
      '--version',
      '2024.1',
    ]);
    expect(stdout.trim()).toBe(path.resolve(out));
    const manifest = (await loadBundle(out)).manifest;
    expect([manifest.name, manifest.version, manifest.precision]).toEqual(['tiny', '2024.1', 'fp16']);
    const bad = await promisify(execFile)(process.execPath, [
      CLI,
      'convert',
      dir,
      '--out',
      path.join(tmp, 'cli-bad'),
    ]).catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stderr: string }).stderr).toMatch(/no tokenizer vocabulary found.*--vocab/s);
  });

  test('default names', () => {
    expect(defaultModelName('/models/my-clip/')).toBe('my-clip');
    expect(defaultModelName('/runs/x/checkpoints/epoch_12.pt')).toBe('epoch_12');
    expect(defaultModelName('/models/vit-l/open_clip_pytorch_model.bin')).toBe('vit-l');
  });
});
