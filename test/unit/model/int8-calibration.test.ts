/**
 * What the int8 converter calibrates on and how it chooses what goes back to fp32 (tiny models):
 * served image–caption pairs instead of generated inputs (`--calibration-data`, a fine-tune job's
 * own pairs), and, when the end-to-end check fails, each int8 layer's measured end-to-end error per
 * multiply-add rather than its local drift.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { int8SettingsFromFlags, parseInt8ContractFlag } from '../../../server/src/cli/int8-options';
import { renderIcon } from '../../../server/src/eval/icon-set';
import { createAdapterMethod } from '../../../server/src/finetune/adapter';
import { FineTuneCancelledError } from '../../../server/src/finetune/method';
import { writePairsFile } from '../../../server/src/finetune/dataset';
import { BundleError, loadBundle, writeBundle } from '../../../server/src/model/bundle';
import { pairsCalibrationSet } from '../../../server/src/model/calibration-set';
import { ARCH_PRESETS, resolveConfig } from '../../../server/src/model/config';
import type { Int8Settings } from '../../../server/src/model/int8';
import { demoteByErrors, layerCost } from '../../../server/src/model/int8-sensitivity';
import { randomStateDict } from '../../../server/src/model/random-init';
import type { StateDict } from '../../../server/src/model/state-dict';
import { preprocessImage } from '../../../server/src/preprocess';
import { buildDemoVocab, ClipTokenizer } from '../../../server/src/tokenizer';

jest.setTimeout(120_000);

const COLOURS = ['red', 'green', 'blue', 'yellow'];
const SHAPES = ['circle', 'square', 'star'];

describe('choosing the layers that go back to fp32 by their end-to-end error', () => {
  const errors = (m: Record<string, number[]>) => new Map(Object.entries(m).map(([k, v]) => [k, Float64Array.from(v)]));
  const contract = { minMeanCosine: 0.999, minCosine: 0.995 }; // mean error ≤ 0.8e-3, worst ≤ 4e-3 with margin

  it('moves back the most error per multiply-add first, until the summed errors meet the contract', () => {
    const e = errors({ a: [5e-4, 5e-4], b: [3e-4, 3e-4], c: [1e-4, 1e-4] }); // 9e-4 in all
    const score = { a: 1, b: 3, c: 2 }; // b costs least per unit of error removed
    expect([...demoteByErrors(new Set(['a', 'b', 'c']), e, score, contract)].sort()).toEqual(['a', 'c']);
    // Already within the contract: nothing moves.
    const small = errors({ a: [1e-4, 1e-4], b: [1e-4, 1e-4] });
    expect(demoteByErrors(new Set(['a', 'b']), small, { a: 1, b: 2 }, contract)).toEqual(new Set(['a', 'b']));
  });

  it('holds the worst sample to the minimum, not only the mean', () => {
    // Mean 2.5e-4 (fine), but sample 2 sums to 5e-3 > 0.8 × 5e-3.
    const e = errors({ a: [0, 4.5e-3, 0, 0], b: [0, 0.5e-3, 0, 0] });
    expect([...demoteByErrors(new Set(['a', 'b']), e, { a: 2, b: 1 }, contract)]).toEqual(['b']);
  });

  it('leaves unmeasured layers alone', () => {
    const e = errors({ a: [1e-2] });
    expect([...demoteByErrors(new Set(['a', 'z']), e, { a: 1 }, contract)]).toEqual(['z']);
  });

  it('counts multiply-adds per sample: every token through a block projection, one row through the final one', () => {
    const cfg = resolveConfig({ model_cfg: ARCH_PRESETS['ViT-B-32'] }).model_cfg;
    const p = 'visual.transformer.resblocks.0.';
    expect(layerCost(cfg, 'visual', `${p}attn.in_proj`)).toBe(3 * layerCost(cfg, 'visual', `${p}attn.out_proj`));
    expect(layerCost(cfg, 'visual', `${p}mlp.c_fc`)).toBe(4 * layerCost(cfg, 'visual', `${p}attn.out_proj`));
    expect(layerCost(cfg, 'visual', `${p}attn.out_proj`)).toBe(50 * 768 * 768); // 7 × 7 patches + class token
    expect(layerCost(cfg, 'visual', 'visual.proj')).toBe(768 * 512);
  });
});

describe('int8 calibration on served data (tiny model)', () => {
  let tmp: string;
  let vocab: string;
  let sd: StateDict;
  let config: ReturnType<typeof resolveConfig>;
  let pairs: { image: string; caption: string }[];

  const write = (dir: string, settings: Partial<Int8Settings>, stateDict = sd) =>
    writeBundle({
      outDir: path.join(tmp, dir),
      name: 'tiny',
      version: dir,
      config,
      stateDict,
      vocabFile: vocab,
      precision: 'int8',
      int8Settings: settings,
    });

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-cal-'));
    vocab = path.join(tmp, 'vocab.txt.gz');
    const tok = ClipTokenizer.fromMerges(buildDemoVocab());
    tok.writeMergesFile(vocab);
    config = resolveConfig({
      model_cfg: { ...ARCH_PRESETS.tiny, text_cfg: { ...ARCH_PRESETS.tiny.text_cfg, vocab_size: tok.vocabSize } },
    });
    sd = randomStateDict(config.model_cfg, 5);
    const icons = path.join(tmp, 'icons');
    fs.mkdirSync(icons);
    pairs = [];
    for (const colour of COLOURS)
      for (const shape of SHAPES) {
        const image = path.join(icons, `${colour}-${shape}.png`);
        fs.writeFileSync(image, await renderIcon(shape, colour, 'white'));
        pairs.push({ image, caption: `a ${colour} ${shape} on a white background` });
      }
    writePairsFile(
      icons,
      pairs.map((p) => ({ rel: path.basename(p.image), caption: p.caption })),
    );
  });

  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('takes a seeded sample of the pairs, preprocessed exactly as serving does', async () => {
    const pre = config.preprocess_cfg;
    const a = pairsCalibrationSet({ pairs, source: 'icons' }, 5, pre);
    const b = pairsCalibrationSet({ pairs, source: 'icons' }, 5, pre);
    expect(a.captions).toHaveLength(5);
    expect(a.captions).toEqual(b.captions);
    expect(a.source).toBe('icons (5 of 12 pairs)');
    const i = pairs.findIndex((p) => p.caption === a.captions[1]);
    const want = await preprocessImage(fs.readFileSync(pairs[i].image), pre);
    expect(Array.from((await a.images(1, 1)).subarray(0, want.length))).toEqual(Array.from(want));
    expect(pairsCalibrationSet({ pairs, source: 'icons' }, 100, pre).captions).toHaveLength(12);
    expect(() => pairsCalibrationSet({ pairs: [], source: 'none' }, 5, pre)).toThrow(/no image–caption pairs/);
  });

  it('records the served data as the calibration source and calibrates on it', async () => {
    const m = await write('served', { samples: 8, data: { pairs, source: 'test icons' } });
    expect(m.int8!.calibration).toEqual({ images: 8, captions: 8, generator: 'test icons (8 of 12 pairs)' });
    const generated = await write('generated', { samples: 8 });
    expect(generated.int8!.calibration.generator).toMatch(/generated|calibration-inputs/);
    // Different inputs, different measurements of the same weights.
    expect(m.int8!.towers.visual.drift).not.toEqual(generated.int8!.towers.visual.drift);
  });

  it('names the calibration image that does not decode', async () => {
    const bad = path.join(tmp, 'bad.png');
    fs.writeFileSync(bad, 'not an image');
    const err = await write('bad', {
      samples: 4,
      data: { pairs: [{ image: bad, caption: 'x' }], source: 'bad' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as Error).message).toContain(bad);
    expect(fs.existsSync(path.join(tmp, 'bad'))).toBe(false); // nothing half-written
  });

  it('when the check fails, measures every int8 layer end to end and moves back the most error per multiply-add', async () => {
    // A contract no all-int8 tiny tower meets (its cosine is ~0.99998), so the check must choose.
    const m = await write('strict', {
      samples: 8,
      sensitivitySamples: 8,
      maxDrift: 1e9,
      minMeanCosine: 0.999999,
      minCosine: 0.99999,
      data: { pairs, source: 'test icons' },
    });
    for (const tower of ['visual', 'textual'] as const) {
      const r = m.int8!.towers[tower];
      expect(r.sensitivity_samples).toBe(8);
      // Measured: exactly the layers that were int8 when the first check failed (all but the kept final projection).
      expect(Object.keys(r.sensitivity!).sort()).toEqual([...r.int8_layers, ...r.demoted_by_check].sort());
      expect(r.demoted_by_check.length).toBeGreaterThan(0);
      for (const e of Object.values(r.sensitivity!)) expect(e).toBeGreaterThan(0);
      // The first to go back is the one with the most error per multiply-add.
      const perCost = (l: string) => r.sensitivity![l] / layerCost(config.model_cfg, tower, l);
      const best = Object.keys(r.sensitivity!).sort((a, b) => perCost(b) - perCost(a))[0];
      expect(r.demoted_by_check).toContain(best);
      expect(r.int8_layers.length === 0 || r.cosine_to_fp32.mean >= 0.999999).toBe(true);
    }
  });

  it('the CLI flags: calibration data as an open_clip CSV, for int8 only', () => {
    const csv = path.join(tmp, 'icons', 'pairs.tsv');
    const s = int8SettingsFromFlags(
      {
        calibrationData: csv,
        calibrationSamples: '16',
        csvImgKey: 'filepath',
        csvCaptionKey: 'title',
        csvSeparator: '\t',
      },
      'int8',
    );
    expect(s.samples).toBe(16);
    expect(s.data!.pairs).toHaveLength(12);
    expect(s.data!.pairs[0].image).toBe(pairs[0].image);
    expect(s.data!.source).toBe(`--calibration-data ${csv}`);
    expect(() =>
      int8SettingsFromFlags(
        { calibrationData: csv, csvImgKey: 'filepath', csvCaptionKey: 'title', csvSeparator: '\t' },
        'fp32',
      ),
    ).toThrow(/--calibration-data applies to --precision int8 only/);
    expect(
      int8SettingsFromFlags({ csvImgKey: 'filepath', csvCaptionKey: 'title', csvSeparator: '\t' }, 'fp32'),
    ).toEqual({});
  });

  it('the contract flag: two cosines, the minimum not above the mean', () => {
    expect(parseInt8ContractFlag('0.9995,0.997')).toEqual({ minMeanCosine: 0.9995, minCosine: 0.997 });
    for (const bad of ['0.999', '0.99,0.999', '1.5,0.9', '0,0', 'a,b', '0.999,0.995,0.99'])
      expect(() => parseInt8ContractFlag(bad)).toThrow(/--int8-contract/);
    const flags = { int8Contract: '0.9999,0.999', csvImgKey: 'filepath', csvCaptionKey: 'title', csvSeparator: '\t' };
    expect(int8SettingsFromFlags(flags, 'int8')).toEqual({ minMeanCosine: 0.9999, minCosine: 0.999 });
    expect(() => int8SettingsFromFlags(flags, 'fp16')).toThrow(/--int8-contract applies to --precision int8 only/);
  });

  it('an adapter fine-tune of an int8 version calibrates the new version on its own training pairs', async () => {
    const base = path.join(tmp, 'base-int8');
    await write('base-int8', { samples: 8 });
    const workDir = path.join(tmp, 'job');
    fs.mkdirSync(workDir);
    const job = await createAdapterMethod({ dataDir: tmp, runtime: { provider: 'cpu', preprocessWorkers: 1 } }).run({
      jobId: 'ftjob-int8',
      hyperparameters: { epochs: 2, batch_size: 4, validation_split: 0.25 },
      datasetDir: path.join(tmp, 'icons'),
      workDir,
      baseModel: { version: 'base-int8', bundleDir: base },
      outputVersion: 'tuned-int8',
      signal: new AbortController().signal,
      emit: () => undefined,
    });
    const m = (await loadBundle(job.bundleDir)).manifest;
    expect(m.precision).toBe('int8');
    // 12 pairs, a quarter held out for validation: it calibrates on the 9 it trained on.
    expect(m.int8!.calibration.generator).toBe('fine-tune job ftjob-int8 (its training pairs) (9 of 9 pairs)');
  });

  it("a cancel during the new int8 version's write (calibration included) stops the writer and leaves nothing behind", async () => {
    const base = path.join(tmp, 'base-int8');
    const workDir = path.join(tmp, 'job-cancelled');
    fs.mkdirSync(workDir);
    const abort = new AbortController();
    const run = createAdapterMethod({ dataDir: tmp, runtime: { provider: 'cpu', preprocessWorkers: 1 } }).run({
      jobId: 'ftjob-int8-cancelled',
      hyperparameters: { epochs: 2, batch_size: 4, validation_split: 0.25 },
      datasetDir: path.join(tmp, 'icons'),
      workDir,
      baseModel: { version: 'base-int8', bundleDir: base },
      outputVersion: 'tuned-int8-cancelled',
      signal: abort.signal,
      // Cancel once the writer (and its calibration) is under way.
      emit: (e) => {
        if (e.type === 'log' && /writing the new model version/.test(e.message ?? ''))
          setTimeout(() => abort.abort(), 100);
      },
    });
    await expect(run).rejects.toBeInstanceOf(FineTuneCancelledError);
    // The terminated worker's temp dir is removed once it has exited: wait for that, generously.
    const leftovers = () => fs.readdirSync(workDir).filter((f) => f.startsWith('bundle'));
    for (let i = 0; i < 200 && leftovers().length; i++) await new Promise((r) => setTimeout(r, 50));
    expect(leftovers()).toEqual([]);
  });
});
