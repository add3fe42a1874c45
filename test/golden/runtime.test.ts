/**
 * Golden parity of the ONNX towers run through loadModel (worker threads, onnxruntime CPU) against
 * open_clip's own outputs, plus the runtime's batching/cutting/event-loop behaviour.
 * Needs dist/ (npm test builds it): sessions run in compiled worker threads.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { l2normalize, similarityLogits } from '../../server/src/inference/heads';
import { cutTextBatch, loadModel, RuntimeError, type LoadedModel } from '../../server/src/runtime/model';
import { WorkerSession } from '../../server/src/runtime/worker-session';
import { buildGoldenBundle, closeness, GOLDEN_MODELS, goldenExpected, goldenInputs } from '../helpers/golden-bundles';
import { describeGolden } from '../helpers/shared';

const flat = (rows: number[][]): number[] => rows.flat();

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-runtime-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('feature helpers', () => {
  test('l2normalize divides each row by max(norm, 1e-12)', () => {
    const out = l2normalize(Float32Array.of(3, 4, 0, 0), 2);
    expect(Array.from(out)).toEqual([0.6, 0.8, 0, 0].map(Math.fround));
    expect(() => l2normalize(new Float32Array(3), 2)).toThrow(RangeError);
  });

  test('cutTextBatch cuts to the longest first-argmax + 1 and rejects bad ids', () => {
    const ctx = 6;
    const ids = Int32Array.from([9, 1, 2, 99, 0, 0, /**/ 9, 99, 5, 99, 0, 0]); // first max at 3 and at 1
    const { ids: cut, length } = cutTextBatch(ids, 2, ctx, 100);
    expect(length).toBe(4);
    expect(Array.from(cut, Number)).toEqual([9, 1, 2, 99, 9, 99, 5, 99]);
    expect(() => cutTextBatch(ids, 3, ctx, 100)).toThrow(/expected 3 × 6 token ids/);
    expect(() => cutTextBatch(Int32Array.from([1, 100, 0, 0, 0, 0]), 1, ctx, 100)).toThrow(/outside the vocabulary/);
  });
});

describeGolden('golden parity (open_clip reference outputs)', () => {
  for (const name of GOLDEN_MODELS) {
    describe(name, () => {
      let model: LoadedModel;
      let bundleDir: string;
      beforeAll(async () => {
        bundleDir = await buildGoldenBundle(name, path.join(tmp, name));
        model = await loadModel(bundleDir, { provider: 'cpu', intraOpThreads: 1, preprocessWorkers: 1 });
      });
      afterAll(() => model?.close());

      test('image and text features within 1e-4, logits within 1e-3', async () => {
        const exp = goldenExpected(name);
        const inp = goldenInputs(name);
        const img = await model.encodeImage(inp.images.slice(), inp.nImages);
        const txt = await model.encodeText(inp.ids, inp.nTexts);
        const E = model.info.embedDim;
        const fi = closeness(img, flat(exp.values.image_features), 1e-4, 1e-4);
        const ft = closeness(txt, flat(exp.values.text_features), 1e-4, 1e-4);
        const { logitsPerImage, logitsPerText } = similarityLogits(img, txt, E, model.info.logitScale);
        const li = closeness(logitsPerImage, flat(exp.values.logits_per_image), 1e-3, 1e-4);
        const lt = closeness(logitsPerText, flat(exp.values.logits_per_text), 1e-3, 1e-4);
        const ni = closeness(l2normalize(img, E), flat(exp.values.image_features_normalized), 1e-4, 1e-4);
        console.log(
          `${name}: max |Δ| image ${fi.maxAbs.toExponential(2)}, text ${ft.maxAbs.toExponential(2)}, logits ${li.maxAbs.toExponential(2)}`,
        );
        expect(Math.fround(model.info.logitScale)).toBe(Math.fround(exp.values.logit_scale_exp));
        for (const c of [fi, ft, li, lt, ni]) expect(c.ratio).toBeLessThanOrEqual(1);
      });

      if (name !== 'tiny-gelu') return;

      test('the text cut to the longest EOT + 1 equals the full 77-position run', async () => {
        const inp = goldenInputs(name);
        // Rows 0 and 1 end early (EOT at 9 and 1), so the batch is cut to 10 positions.
        const rows = inp.ids.slice(0, 2 * 77);
        expect(cutTextBatch(rows, 2, 77, 49408).length).toBe(10);
        const cut = await model.encodeText(rows, 2);
        // A raw session (in a worker: onnxruntime's typed arrays do not cross jest's sandbox realm).
        const session = await WorkerSession.create(
          {
            modelPath: path.join(bundleDir, 'textual.onnx'),
            providers: ['cpu'],
            graphOptimizationLevel: 'all',
            intraOpThreads: 1,
          },
          'text tower, 77 positions',
        );
        try {
          const full = await session.run(
            { input_ids: { type: 'int64', data: BigInt64Array.from(rows, BigInt).buffer, dims: [2, 77] } },
            ['text_embeds'],
          );
          expect(closeness(cut, new Float32Array(full.text_embeds.data), 1e-5, 0).ratio).toBeLessThanOrEqual(1);
        } finally {
          await session.close();
        }
      });

      test('a batch of N equals N single calls (1e-5)', async () => {
        const inp = goldenInputs(name);
        const E = model.info.embedDim;
        const per = inp.images.length / inp.nImages;
        const batchImg = await model.encodeImage(inp.images.slice(), inp.nImages);
        const batchTxt = await model.encodeText(inp.ids, inp.nTexts);
        for (let i = 0; i < inp.nImages; i++) {
          const one = await model.encodeImage(inp.images.slice(i * per, (i + 1) * per), 1);
          expect(closeness(one, batchImg.subarray(i * E, (i + 1) * E), 1e-5, 0).ratio).toBeLessThanOrEqual(1);
        }
        for (let i = 0; i < inp.nTexts; i++) {
          const one = await model.encodeText(inp.ids.slice(i * 77, (i + 1) * 77), 1);
          expect(closeness(one, batchTxt.subarray(i * E, (i + 1) * E), 1e-5, 0).ratio).toBeLessThanOrEqual(1);
        }
      });

      test('bad inputs fail with RuntimeError', async () => {
        await expect(model.encodeImage(new Float32Array(10), 1)).rejects.toThrow(RuntimeError);
        await expect(model.encodeText(new Int32Array(77).fill(49408), 1)).rejects.toThrow(/outside the vocabulary/);
        await expect(model.encodeText(new Int32Array(76), 1)).rejects.toThrow(RuntimeError);
      });
    });
  }

  test('the event loop stays responsive while a batch runs (worker threads)', async () => {
    // One inference thread leaves a core to the main thread. The asserts are orders of magnitude, not
    // budgets: code that ran inference on the main thread would block the loop for a whole run (and the
    // 2 ms timer would fire about once per run); timings on a loaded CI machine are only printed.
    const model = await loadModel(path.join(tmp, 'small-l14like'), {
      provider: 'cpu',
      intraOpThreads: 1,
      preprocessWorkers: 1,
    });
    try {
      const S = model.info.imageSize;
      const n = 32;
      const runs = 4;
      const pixels = new Float32Array(n * 3 * S * S).map((_, i) => Math.sin(i) * 2);
      await model.encodeImage(pixels.slice(), n); // warm
      const h = monitorEventLoopDelay({ resolution: 1 });
      let ticks = 0;
      const timer = setInterval(() => ticks++, 2);
      h.enable();
      const t0 = performance.now();
      for (let r = 0; r < runs; r++) await model.encodeImage(pixels.slice(), n);
      const ms = performance.now() - t0;
      h.disable();
      clearInterval(timer);
      const p99 = h.percentile(99) / 1e6;
      const perRun = ms / runs;
      console.log(
        `event loop during ${ms.toFixed(0)} ms of inference (${runs} × batch ${n}, 224 px, ${perRun.toFixed(0)} ms a run): p99 delay ${p99.toFixed(2)} ms, max ${(h.max / 1e6).toFixed(2)} ms, ${ticks} timer ticks`,
      );
      expect(p99).toBeLessThan(perRun);
      expect(ticks).toBeGreaterThan(4 * runs); // a blocked loop would tick about once per run
    } finally {
      await model.close();
    }
  });

  test('an fp16 bundle loads and stays close to fp32', async () => {
    const dir = await buildGoldenBundle('tiny-gelu', path.join(tmp, 'tiny-gelu-fp16'), 'fp16');
    const model = await loadModel(dir, { provider: 'cpu', intraOpThreads: 1, preprocessWorkers: 1 });
    try {
      expect(model.info.precision).toBe('fp16');
      const exp = goldenExpected('tiny-gelu');
      const inp = goldenInputs('tiny-gelu');
      const E = model.info.embedDim;
      const img = await model.encodeImage(inp.images.slice(), inp.nImages);
      const txt = await model.encodeText(inp.ids, inp.nTexts);
      const fi = closeness(img, flat(exp.values.image_features), 1e-2, 0);
      const ft = closeness(txt, flat(exp.values.text_features), 1e-2, 0);
      const { logitsPerImage } = similarityLogits(img, txt, E, model.info.logitScale);
      const li = closeness(logitsPerImage, flat(exp.values.logits_per_image), 0.5, 0);
      console.log(
        `fp16 tiny-gelu: max |Δ| image ${fi.maxAbs.toExponential(2)}, text ${ft.maxAbs.toExponential(2)}, logits ${li.maxAbs.toExponential(2)}`,
      );
      expect(fi.ratio).toBeLessThanOrEqual(1);
      expect(ft.ratio).toBeLessThanOrEqual(1);
      expect(li.ratio).toBeLessThanOrEqual(1);
      // Half the bytes on disk.
      const f32Data = fs.statSync(path.join(tmp, 'tiny-gelu', 'visual.onnx.data')).size;
      expect(fs.statSync(path.join(dir, 'visual.onnx.data')).size).toBeLessThan(f32Data * 0.55);
    } finally {
      await model.close();
    }
  });
});

describe('worker recovery', () => {
  test('a session whose worker died fails its in-flight run, then the next run starts a new worker', async () => {
    const { writeRandomBundle } = await import('../../server/src/model/random-bundle');
    const dir = path.join(tmp, 'recovery');
    await writeRandomBundle({ arch: 'tiny', seed: 3, outDir: dir });
    const session = await WorkerSession.create(
      {
        modelPath: path.join(dir, 'textual.onnx'),
        providers: ['cpu'],
        graphOptimizationLevel: 'all',
        intraOpThreads: 1,
      },
      'text tower',
    );
    const feeds = () => ({
      input_ids: { type: 'int64' as const, data: BigInt64Array.from([1n, 2n, 3n]).buffer, dims: [1, 3] },
    });
    try {
      const before = new Float32Array((await session.run(feeds(), ['text_embeds'])).text_embeds.data);
      const inFlight = session.run(feeds(), ['text_embeds']);
      await session.kill();
      await expect(inFlight).rejects.toThrow(RuntimeError);
      // Restarts are spaced (1 s after the previous start); concurrent callers share one restart.
      await new Promise((r) => setTimeout(r, 1100));
      const [a, b] = await Promise.all([session.run(feeds(), ['text_embeds']), session.run(feeds(), ['text_embeds'])]);
      expect(Array.from(new Float32Array(a.text_embeds.data))).toEqual(Array.from(before));
      expect(Array.from(new Float32Array(b.text_embeds.data))).toEqual(Array.from(before));
      expect(session.restartCount).toBe(1);
    } finally {
      await session.close();
    }
  });
});
