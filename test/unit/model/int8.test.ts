/**
 * The int8 path on tiny models (fast): per-column weight quantization, the calibrated converter
 * (which layers it keeps in fp32 and why, what the manifest records), tolerance of int8 features
 * to the fp32 bundle of the same weights, weights read back from an int8 bundle, and an int8
 * version served and hot-swapped with an fp32 one, its precision visible in GetModelInfo and in
 * clipserve_model_info. (The fp32 golden parity tests stay exact; these are the int8 tolerances.)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { parseCalibrationSamplesFlag, parsePrecisionFlag } from '../../../server/src/checkpoint/convert';
import { BundleError, loadBundle, parseManifest, writeBundle } from '../../../server/src/model/bundle';
import { ARCH_PRESETS, resolveConfig } from '../../../server/src/model/config';
import { calibrationImageBatch } from '../../../server/src/model/calibration-inputs';
import { cosineSummary, rowCosines, type Int8Settings } from '../../../server/src/model/int8';
import { rewriteInt8Tower } from '../../../server/src/model/int8-rewrite';
import { withOutlierGains } from '../../../server/src/model/outlier-variant';
import { randomStateDict } from '../../../server/src/model/random-init';
import type { StateDict } from '../../../server/src/model/state-dict';
import { readBundleStateDict } from '../../../server/src/model/bundle-weights';
import { ModelRegistry } from '../../../server/src/versions/registry';
import { IMAGE_INPUT, IMAGE_OUTPUT, quantizableLayers } from '../../../server/src/onnx/clip-graph';
import { decodeModel } from '../../../server/src/onnx/proto';
import { dequantizePerColumn, quantizePerColumn } from '../../../server/src/onnx/quantize';
import { loadModel } from '../../../server/src/runtime/model';
import { WorkerSession } from '../../../server/src/runtime/worker-session';
import { startServer } from '../../../server/src/serve/server';
import { SqliteStore } from '../../../server/src/store/sqlite-store';
import { buildDemoVocab, ClipTokenizer } from '../../../server/src/tokenizer';
import { client, unary } from '../../helpers/finetune-fixtures';

jest.setTimeout(120_000);

const CONFIG = (vocabSize: number) =>
  resolveConfig({
    model_cfg: { ...ARCH_PRESETS.tiny, text_cfg: { ...ARCH_PRESETS.tiny.text_cfg, vocab_size: vocabSize } },
  });
const CAPTIONS = [
  'a red star on a white background',
  'two dogs playing in the snow',
  'a photo of a blue car',
  'the cat is black and small',
];
const SAMPLES = 24;

describe('per-column int8 weights', () => {
  it('scales each column by its largest magnitude and rounds within half a step', () => {
    const rows = 5;
    const cols = 3;
    const w = Float32Array.from([0.5, -2, 0, 0.25, 1, 0, -1, 0.3, 0, 0.1, -0.7, 0, 0.9, 2, 0]);
    const q = quantizePerColumn(w, rows, cols);
    expect(Array.from(q.scales)).toEqual([Math.fround(1 / 127), Math.fround(2 / 127), 1]); // all-zero column: scale 1
    expect(q.values[2 * cols]).toBe(-127); // -1 in column 0
    expect(q.values[1]).toBe(-127);
    const back = dequantizePerColumn(q, rows, cols);
    for (let i = 0; i < w.length; i++)
      expect(Math.abs(back[i] - w[i])).toBeLessThanOrEqual(q.scales[i % cols] / 2 + 1e-7);
    expect(Math.min(...q.values)).toBeGreaterThanOrEqual(-127);
  });

  it('checks the precision and calibration flags', () => {
    expect(parsePrecisionFlag('int8')).toBe('int8');
    expect(() => parsePrecisionFlag('int4')).toThrow(/fp32, fp16, int8/);
    expect(parseCalibrationSamplesFlag('64')).toBe(64);
    for (const bad of ['0', '-3', '1.5', 'many', '1000000'])
      expect(() => parseCalibrationSamplesFlag(bad)).toThrow(/--calibration-samples/);
  });
});

describe('int8 bundles of the tiny model', () => {
  let tmp: string;
  let vocab: string;
  let sd: StateDict;
  let config: ReturnType<typeof CONFIG>;

  const write = (dir: string, precision: 'fp32' | 'int8', stateDict = sd, settings: Partial<Int8Settings> = {}) =>
    writeBundle({
      outDir: path.join(tmp, dir),
      name: 'tiny',
      version: dir,
      config,
      stateDict,
      vocabFile: vocab,
      precision,
      int8Settings: { samples: SAMPLES, ...settings },
    });

  /** Image and text features of a bundle on a few held-out inputs. */
  const features = async (dir: string): Promise<{ img: Float32Array; txt: Float32Array }> => {
    const model = await loadModel(path.join(tmp, dir), { provider: 'cpu', intraOpThreads: 1, preprocessWorkers: 1 });
    try {
      const S = model.info.imageSize;
      const img = await model.encodeImage(calibrationImageBatch(5000, 6, S, model.bundle.manifest.preprocess_cfg), 6);
      const txt = await model.encodeText(
        model.tokenizer.tokenizeBatch(CAPTIONS, model.info.contextLength).ids,
        CAPTIONS.length,
      );
      return { img, txt };
    } finally {
      await model.close();
    }
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-'));
    vocab = path.join(tmp, 'vocab.txt.gz');
    const tok = ClipTokenizer.fromMerges(buildDemoVocab());
    tok.writeMergesFile(vocab);
    config = CONFIG(tok.vocabSize);
    sd = randomStateDict(config.model_cfg, 5);
    await write('fp32', 'fp32');
    await write('int8', 'int8');
  });

  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('records the int8 plan: every quantizable layer once, its drift, the calibration and its cosine', async () => {
    const m = (await loadBundle(path.join(tmp, 'int8'))).manifest;
    expect(m.precision).toBe('int8');
    expect(m.int8!.calibration).toMatchObject({ images: SAMPLES, captions: SAMPLES });
    for (const tower of ['visual', 'textual'] as const) {
      const r = m.int8!.towers[tower];
      expect([...r.int8_layers, ...r.fp32_layers].sort()).toEqual(quantizableLayers(config.model_cfg, tower).sort());
      expect(Object.keys(r.drift).sort()).toEqual(quantizableLayers(config.model_cfg, tower).sort());
      // Random weights have no outlier channels: every projection drifts ~1 %, well inside the bound;
      // only the final projection stays fp32, by the default setting.
      expect(r.kept_fp32).toEqual([tower === 'visual' ? 'visual.proj' : 'text_projection']);
      expect(r.fp32_layers).toEqual(r.kept_fp32);
      for (const d of Object.values(r.drift)) expect(d).toBeLessThan(m.int8!.max_drift);
      expect(r.cosine_to_fp32.min).toBeGreaterThan(0.99);
    }
    // The graph really computes in int8: one MatMulInteger per int8 layer.
    const visual = decodeModel(fs.readFileSync(path.join(tmp, 'int8', 'visual.onnx')));
    expect(visual.graph!.node!.filter((n) => n.opType === 'MatMulInteger')).toHaveLength(
      m.int8!.towers.visual.int8_layers.length,
    );
  });

  it('keeps the final projections in fp32 by default; finalProjections int8 lets calibration decide', async () => {
    const dflt = (await loadBundle(path.join(tmp, 'int8'))).manifest.int8!;
    const all = (await write('final-int8', 'int8', sd, { finalProjections: 'int8' })).int8!;
    for (const tower of ['visual', 'textual'] as const) {
      const final = tower === 'visual' ? 'visual.proj' : 'text_projection';
      expect(all.towers[tower].fp32_layers).toEqual([]);
      expect(all.towers[tower].kept_fp32).toEqual([]);
      // Same calibration, same drift measured; only the choice differs.
      expect(dflt.towers[tower].drift[final]).toBe(all.towers[tower].drift[final]);
      expect(dflt.towers[tower].int8_layers).toEqual(all.towers[tower].int8_layers.filter((l) => l !== final));
    }
    // The default graph multiplies the pooled token by the float32 weight: one MatMulInteger fewer.
    const count = (dir: string) =>
      decodeModel(fs.readFileSync(path.join(tmp, dir, 'visual.onnx'))).graph!.node!.filter(
        (n) => n.opType === 'MatMulInteger',
      ).length;
    expect(count('int8')).toBe(count('final-int8') - 1);
    await expect(write('bad-final', 'int8', sd, { finalProjections: 'int4' as never })).rejects.toThrow(
      /finalProjections must be fp32 or int8/,
    );
  });

  it('gives features within tolerance of the fp32 bundle of the same weights, not equal to them', async () => {
    const [f32, i8] = [await features('fp32'), await features('int8')];
    const E = config.model_cfg.embed_dim;
    for (const [a, b] of [
      [i8.img, f32.img],
      [i8.txt, f32.txt],
    ]) {
      const c = cosineSummary(rowCosines(a, b, E));
      expect(c.mean).toBeGreaterThan(0.995);
      expect(c.min).toBeGreaterThan(0.99);
      expect(c.min).toBeLessThan(1 - 1e-7); // int8 rounding is visible: the int8 graph ran
    }
  });

  it('quantizes the GELU outputs feeding c_proj shifted onto [0, 255] by default: less drift than symmetric', async () => {
    const shifted = (await loadBundle(path.join(tmp, 'int8'))).manifest.int8!;
    const symmetric = (await write('int8-symmetric', 'int8', sd, { activations: 'symmetric' })).int8!;
    expect(shifted.method).toMatch(/GELU outputs shifted/);
    expect(symmetric.method).not.toMatch(/shifted/);
    for (const tower of ['visual', 'textual'] as const) {
      const cProj = quantizableLayers(config.model_cfg, tower).filter((l) => l.endsWith('mlp.c_proj'));
      // Twice the levels over the row's real range: the rounding error roughly halves.
      for (const l of cProj)
        expect(shifted.towers[tower].drift[l]).toBeLessThan(0.75 * symmetric.towers[tower].drift[l]);
      // The other layers are quantized the same way in both.
      for (const l of quantizableLayers(config.model_cfg, tower).filter((x) => !cProj.includes(x)))
        expect(shifted.towers[tower].drift[l]).toBe(symmetric.towers[tower].drift[l]);
    }
    // The shift is undone in the graph by a constant per output channel, one per int8 c_proj.
    const visual = decodeModel(fs.readFileSync(path.join(tmp, 'int8', 'visual.onnx')));
    const corrections = visual
      .graph!.initializer!.filter((t) => t.name!.endsWith('.shift_correction'))
      .map((t) => t.name);
    expect(corrections.sort()).toEqual(
      shifted.towers.visual.int8_layers
        .filter((l) => l.endsWith('mlp.c_proj'))
        .map((l) => `${l}.shift_correction`)
        .sort(),
    );
    expect(corrections.length).toBeGreaterThan(0);
    await expect(write('bad-activations', 'int8', sd, { activations: 'asymmetric' as never })).rejects.toThrow(
      /int8 activations must be one of symmetric, shifted-gelu/,
    );
  });

  it('keeps in fp32 what drifts beyond the bound: with bound 0 the bundle computes exactly the fp32 features', async () => {
    const m = await write('bound0', 'int8', sd, { maxDrift: 0 });
    expect(m.int8!.towers.visual.int8_layers).toEqual([]);
    expect(m.int8!.towers.textual.int8_layers).toEqual([]);
    const [f32, b0] = [await features('fp32'), await features('bound0')];
    expect(Array.from(b0.img)).toEqual(Array.from(f32.img));
    expect(Array.from(b0.txt)).toEqual(Array.from(f32.txt));
  });

  it('without smoothing, keeps in fp32 the q/k/v projections fed by outlier channels, then whatever the end-to-end check needs', async () => {
    const stressed = withOutlierGains(sd, config.model_cfg);
    await write('stress-fp32', 'fp32', stressed);
    const m = await write('stress-int8', 'int8', stressed, { smoothing: 0 });
    // Every layer int8 and no end-to-end check: what int8 without the contract would serve.
    const forced = await write('stress-all-int8', 'int8', stressed, {
      maxDrift: 1e9,
      minMeanCosine: 0,
      minCosine: 0,
      smoothing: 0,
      finalProjections: 'int8',
    });
    expect(forced.int8!.towers.visual.fp32_layers).toEqual([]);
    for (const tower of ['visual', 'textual'] as const) {
      const r = m.int8!.towers[tower];
      // Softmax turns the q/k error of stretched LayerNorm outputs into a different attention.
      const inProj = quantizableLayers(config.model_cfg, tower).filter((l) => l.endsWith('attn.in_proj'));
      expect(r.fp32_layers).toEqual(expect.arrayContaining(inProj));
      for (const l of inProj) expect(r.drift[l]).toBeGreaterThan(m.int8!.max_drift);
      for (const l of r.fp32_layers)
        expect(r.drift[l] > m.int8!.max_drift || r.demoted_by_check.includes(l) || r.kept_fp32!.includes(l)).toBe(true);
      expect(r.int8_layers.length).toBeGreaterThan(0);
      expect(r.cosine_to_fp32.mean).toBeGreaterThanOrEqual(0.995);
      expect(r.cosine_to_fp32.min).toBeGreaterThanOrEqual(0.99);
    }
    const E = config.model_cfg.embed_dim;
    const ref = await features('stress-fp32');
    const kept = cosineSummary(rowCosines((await features('stress-int8')).img, ref.img, E));
    const all = cosineSummary(rowCosines((await features('stress-all-int8')).img, ref.img, E));
    expect(kept.min).toBeGreaterThan(0.98); // held-out inputs, not the calibration set
    expect(all.min).toBeLessThan(kept.min);
  });

  it('smooths the projections fed by outlier channels (SmoothQuant): fewer fp32 layers, same contract', async () => {
    const stressed = withOutlierGains(sd, config.model_cfg);
    if (!fs.existsSync(path.join(tmp, 'stress-fp32'))) await write('stress-fp32', 'fp32', stressed);
    const plain = await write('stress-unsmoothed', 'int8', stressed, { smoothing: 0 });
    const smoothed = await write('stress-smoothed', 'int8', stressed, { smoothing: 0.5 });
    const E = config.model_cfg.embed_dim;
    const ref = await features('stress-fp32');
    const held = await features('stress-smoothed');
    for (const tower of ['visual', 'textual'] as const) {
      const r = smoothed.int8!.towers[tower];
      // Every LayerNorm-fed projection sees the outlier channels, and only those are smoothed.
      const lnFed = quantizableLayers(config.model_cfg, tower).filter((l) =>
        /attn\.in_proj$|mlp\.c_fc$|^visual\.proj$|^text_projection$/.test(l),
      );
      expect([...r.smoothed_layers!].sort()).toEqual(lnFed.sort());
      for (const l of lnFed) expect(r.drift[l]).toBeLessThan(plain.int8!.towers[tower].drift[l]);
      expect(r.cosine_to_fp32.mean).toBeGreaterThanOrEqual(0.995);
      expect(r.cosine_to_fp32.min).toBeGreaterThanOrEqual(0.99);
    }
    const int8Count = (m: typeof plain) =>
      m.int8!.towers.visual.int8_layers.length + m.int8!.towers.textual.int8_layers.length;
    expect(int8Count(smoothed)).toBeGreaterThan(int8Count(plain));
    const img = cosineSummary(rowCosines(held.img, ref.img, E));
    const txt = cosineSummary(rowCosines(held.txt, ref.txt, E));
    expect(img.min).toBeGreaterThan(0.98); // held-out inputs, not the calibration set
    expect(txt.min).toBeGreaterThan(0.98);
    // A model without outlier channels is left as it is.
    const unstressed = await write('plain-smoothing', 'int8', sd, { smoothing: 0.5 });
    expect(unstressed.int8!.towers.visual.smoothed_layers).toEqual([]);
    expect(unstressed.int8!.towers.textual.smoothed_layers).toEqual([]);
  });

  it('the to-float formulation (per-axis QuantizeLinear + MatMulIntegerToFloat) computes the same features', async () => {
    const bundle = await loadBundle(path.join(tmp, 'int8'));
    const file = path.join(tmp, 'visual-to-float.onnx');
    rewriteInt8Tower(bundle, 'visual', 'to-float', file);
    const graph = decodeModel(fs.readFileSync(file));
    const ops = graph.graph!.node!.map((n) => n.opType);
    expect(ops.filter((o) => o === 'MatMulIntegerToFloat')).toHaveLength(
      bundle.manifest.int8!.towers.visual.int8_layers.length,
    );
    expect(ops).not.toContain('MatMulInteger');
    const S = config.model_cfg.vision_cfg.image_size;
    const run = async (f: string) => {
      // A fresh input per run: the worker session takes the buffer over.
      const feeds = {
        [IMAGE_INPUT]: {
          type: 'float32' as const,
          data: calibrationImageBatch(7000, 3, S, bundle.manifest.preprocess_cfg).buffer as ArrayBuffer,
          dims: [3, 3, S, S],
        },
      };
      // onnxruntime in a worker thread, like the server and the converter (jest's realm has its own typed arrays).
      const s = await WorkerSession.create(
        { modelPath: f, providers: ['cpu'], graphOptimizationLevel: 'all' },
        'int8 kernel test',
      );
      try {
        return new Float32Array((await s.run(feeds, [IMAGE_OUTPUT]))[IMAGE_OUTPUT].data);
      } finally {
        await s.close();
      }
    };
    const [standard, toFloat] = [await run(bundle.paths.visual), await run(file)];
    const scale = Math.max(...Array.from(standard, Math.abs));
    // Only the order of the two scale multiplications differs: float32 rounding, no int8 step.
    for (let i = 0; i < standard.length; i++) expect(Math.abs(toFloat[i] - standard[i])).toBeLessThan(1e-4 * scale);
  });

  it('reads the weights back from an int8 bundle (dequantized), e.g. for fine-tuning it', async () => {
    const back = readBundleStateDict(await loadBundle(path.join(tmp, 'int8')));
    const key = 'visual.transformer.resblocks.1.mlp.c_fc.weight'; // [out, in]
    const [out, inp] = sd.get(key)!.shape;
    const orig = sd.get(key)!.data;
    const got = back.get(key)!.data;
    for (let o = 0; o < out; o++) {
      let absMax = 0;
      for (let i = 0; i < inp; i++) absMax = Math.max(absMax, Math.abs(orig[o * inp + i]));
      for (let i = 0; i < inp; i++)
        expect(Math.abs(got[o * inp + i] - orig[o * inp + i])).toBeLessThanOrEqual(absMax / 127 / 2 + 1e-7);
    }
    expect(Array.from(back.get('visual.ln_pre.weight')!.data)).toEqual(
      Array.from(sd.get('visual.ln_pre.weight')!.data),
    );
  });

  it('refuses an int8 manifest that does not say which layers are int8', async () => {
    const raw = JSON.parse(fs.readFileSync(path.join(tmp, 'int8', 'clipserve.json'), 'utf8'));
    expect(() => parseManifest({ ...raw, int8: undefined })).toThrow(BundleError);
    expect(() => parseManifest({ ...raw, int8: { towers: { visual: { int8_layers: [] } } } })).toThrow(
      /int8_layers and fp32_layers/,
    );
    expect(() => parseManifest({ ...raw, precision: 'int4' })).toThrow(/precision/);
    expect(parseManifest(raw).int8!.towers.visual.int8_layers.length).toBeGreaterThan(0);
  });

  it('serves an int8 version and hot-swaps between it and fp32, reporting the precision', async () => {
    const dataDir = path.join(tmp, 'data');
    const store = await SqliteStore.open(dataDir);
    await new ModelRegistry(store, dataDir).registerFineTuned({
      version: 'int8',
      name: 'tiny',
      bundleDir: path.join(tmp, 'int8'),
      parentVersion: 'fp32',
      jobId: '',
      metrics: {},
    });
    await store.close();
    const server = await startServer({
      model: path.join(tmp, 'fp32'),
      dataDir,
      host: '127.0.0.1',
      port: 0,
      metricsPort: 0,
      httpPort: 0,
      provider: 'cpu',
      intraOpThreads: 1,
      preprocessWorkers: 1,
      logger: pino({ level: 'silent' }),
    });
    const embed = client('EmbeddingService', server.port);
    const models = client('ModelService', server.port);
    try {
      await server.ready;
      const infoLabel = async () =>
        (await server.metrics.registry.getSingleMetric('clipserve_model_info')!.get()).values.map((v) => v.labels);
      const text = async () =>
        (await unary(embed, 'EmbedText', { texts: [CAPTIONS[0]] })).embeddings[0].values as number[];
      expect((await unary(embed, 'GetModelInfo', {})).precision).toBe('fp32');
      const before = await text();
      await unary(models, 'ActivateModel', { version: 'int8' });
      expect(await unary(embed, 'GetModelInfo', {})).toMatchObject({ version: 'int8', precision: 'int8' });
      expect(await infoLabel()).toEqual([expect.objectContaining({ version: 'int8', precision: 'int8' })]);
      const int8 = await text();
      const cos = int8.reduce((s, v, i) => s + v * before[i], 0); // both L2-normalised
      expect(cos).toBeGreaterThan(0.99);
      expect(cos).toBeLessThan(1 - 1e-7);
      await unary(models, 'ActivateModel', { version: 'fp32' });
      expect((await unary(embed, 'GetModelInfo', {})).precision).toBe('fp32');
      expect(await text()).toEqual(before);
    } finally {
      embed.close();
      models.close();
      await server.shutdown(0);
    }
  });
});
