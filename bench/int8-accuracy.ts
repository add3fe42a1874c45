/**
 * The int8 accuracy contract, measured (docs/int8.md):
 *
 *   node dist-bench/bench/int8-accuracy.js [--sections goldens,vitl,stress,retrieval] [--golden DIR]
 *        [--samples N] [--vitl-samples N] [--eval-images N] [--eval-captions N] [--bench-cache DIR]
 *
 *   goldens    each public golden model (../shared/golden/model) converted with --precision int8:
 *              cosine of its image and text features to the PyTorch features in expected.json
 *   vitl       a full-size seeded random ViT-L/14: cosine of int8 to clipserve's fp32 bundle
 *              (which matches PyTorch, see the golden parity tests) on held-out generated inputs
 *   stress     the same model with outlier LayerNorm gains (model/outlier-variant.ts)
 *   retrieval  a seeded random model (--retrieval-arch, default ViT-B-32) adapter-fine-tuned by clipserve on the synthetic icon set, then
 *              converted to int8 with each --int8-activations scheme (default both), calibrated on each
 *              --calibration kind (default served: the fold's own training pairs; or generated):
 *              R@1/5/10 both ways of fp32 and int8 (bench/int8-retrieval.ts); --retrieval-set held-out
 *              (default: --retrieval-folds folds, default 3, each fine-tuned on its 300 pairs of the
 *              900-pair extended set and evaluated on the other 600; judged on the mean over folds) or
 *              plain (the 150-pair set, trained and evaluated on all 150); --retrieval-epochs (default
 *              100, the fine-tune tests' setting); --int8-contract <mean>,<min> as `convert` takes it
 *   --keep DIR  work in DIR and leave the bundles there (for a later look at per-layer drift)
 *
 * Prints one JSON line per result, then a summary against the contract (cosine ≥ 0.995 mean and
 * ≥ 0.99 min; recall within 1 point).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { convertCheckpoint } from '../server/src/checkpoint/convert';
import { loadBundle, writeBundle, type BundleManifest } from '../server/src/model/bundle';
import { calibrationImage } from '../server/src/model/calibration-inputs';
import { encodeInBatches } from '../server/src/inference/batch-encode';
import { ARCH_PRESETS, resolveConfig, type OpenClipConfig } from '../server/src/model/config';
import { cosineSummary, INT8_ACTIVATIONS, rowCosines } from '../server/src/model/int8';
import type { Int8Activations } from '../server/src/onnx/clip-graph';
import { withOutlierGains } from '../server/src/model/outlier-variant';
import { isArchName } from '../server/src/model/random-bundle';
import { randomStateDict } from '../server/src/model/random-init';
import type { StateDict } from '../server/src/model/state-dict';
import { loadModel, type LoadedModel } from '../server/src/runtime/model';
import { buildDemoVocab, ClipTokenizer } from '../server/src/tokenizer';
import { benchCaptions } from './inputs';
import { parseInt8ContractFlag } from '../server/src/cli/int8-options';
import { layerCounts, retrieval, type CalibrationKind, type Verdict } from './int8-retrieval';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const COSINE_MEAN = 0.995;
const COSINE_MIN = 0.99;

const verdicts: Verdict[] = [];

function print(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

function judgeCosine(what: string, c: { mean: number; min: number }): void {
  verdicts.push({
    what,
    ok: c.mean >= COSINE_MEAN && c.min >= COSINE_MIN,
    detail: `mean ${c.mean.toFixed(5)}, min ${c.min.toFixed(5)}`,
  });
}

/** Each public golden model in int8 against the PyTorch features. */
async function goldens(scratch: string, goldenDir: string, samples: number): Promise<void> {
  const vocab = path.join(goldenDir, 'tokenizer', 'bpe_simple_vocab_16e6.txt.gz');
  for (const name of fs.readdirSync(path.join(goldenDir, 'model')).sort()) {
    const dir = path.join(goldenDir, 'model', name);
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as {
      shapes: Record<string, number[]>;
      values: Record<string, number[][]>;
    };
    const out = path.join(scratch, `golden-${name}`);
    await convertCheckpoint({ input: dir, outDir: out, vocab, precision: 'int8', int8Settings: { samples } });
    const model = await loadModel(out, { provider: 'cpu', preprocessWorkers: 1 });
    try {
      const [nImg, E] = expected.shapes.image_features;
      const [nTxt] = expected.shapes.text_features;
      const raw = fs.readFileSync(path.join(dir, 'inputs_images.f32'));
      const images = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const rawIds = fs.readFileSync(path.join(dir, 'inputs_text_ids.i64'));
      const ids64 = new BigInt64Array(rawIds.buffer.slice(rawIds.byteOffset, rawIds.byteOffset + rawIds.byteLength));
      const img = await model.encodeImage(images, nImg);
      const txt = await model.encodeText(Int32Array.from(ids64, Number), nTxt);
      const image = cosineSummary(rowCosines(img, Float32Array.from(expected.values.image_features.flat()), E));
      const text = cosineSummary(rowCosines(txt, Float32Array.from(expected.values.text_features.flat()), E));
      print({
        section: 'goldens',
        model: name,
        images: nImg,
        texts: nTxt,
        image_cosine_to_pytorch: image,
        text_cosine_to_pytorch: text,
        ...layerCounts(model.bundle.manifest),
      });
      judgeCosine(`golden ${name} image`, image);
      judgeCosine(`golden ${name} text`, text);
    } finally {
      await model.close();
    }
  }
}

/** Features of held-out generated images and bench captions (neither is in the calibration set). */
async function heldOutFeatures(
  model: LoadedModel,
  nImages: number,
  captions: string[],
): Promise<{ img: Float32Array; txt: Float32Array }> {
  const S = model.info.imageSize;
  const cfg = model.bundle.manifest.preprocess_cfg;
  const indices = Array.from({ length: nImages }, (_, i) => i);
  const { image: img } = await encodeInBatches(model, indices, {
    batchSize: 4,
    image: async (i) => calibrationImage(1_000_000 + i, S, cfg),
  });
  const { text: txt } = await encodeInBatches(model, captions, { batchSize: 16, text: (c) => c });
  return { img, txt };
}

/** A full-size ViT-L/14 (seeded random weights, optionally stressed) in int8 against its fp32 bundle. */
async function vitL(
  scratch: string,
  section: 'vitl' | 'stress',
  samples: number,
  nImages: number,
  nCaptions: number,
  benchCache?: string,
): Promise<void> {
  const vocab = path.join(scratch, 'vocab.txt.gz');
  if (!fs.existsSync(vocab)) ClipTokenizer.fromMerges(buildDemoVocab()).writeMergesFile(vocab);
  const tok = ClipTokenizer.fromMergesFile(vocab);
  const preset = ARCH_PRESETS['ViT-L-14'];
  const config: OpenClipConfig = resolveConfig({
    model_cfg: { ...preset, text_cfg: { ...preset.text_cfg, vocab_size: tok.vocabSize } },
  });
  // --bench-cache: the plain model is the pair `npm run bench:int8` built (seed 1), not rebuilt here.
  const reuse = section === 'vitl' && benchCache !== undefined;
  const dirs = reuse
    ? { fp32: path.join(benchCache, 'ViT-L-14'), int8: path.join(benchCache, 'ViT-L-14-int8') }
    : { fp32: path.join(scratch, `${section}-fp32`), int8: path.join(scratch, `${section}-int8`) };
  const t0 = Date.now();
  let t1 = t0;
  let manifest: BundleManifest;
  if (reuse) {
    manifest = (await loadBundle(dirs.int8, { verify: false })).manifest;
  } else {
    let sd: StateDict = randomStateDict(config.model_cfg, 0);
    if (section === 'stress') sd = withOutlierGains(sd, config.model_cfg);
    await writeBundle({
      outDir: dirs.fp32,
      name: `vitl-${section}`,
      version: 'fp32',
      config,
      stateDict: sd,
      vocabFile: vocab,
    });
    t1 = Date.now();
    manifest = await writeBundle({
      outDir: dirs.int8,
      name: `vitl-${section}`,
      version: 'int8',
      config,
      stateDict: sd,
      vocabFile: vocab,
      precision: 'int8',
      int8Settings: { samples },
    });
    sd.clear();
  }
  const t2 = Date.now();
  const captions = benchCaptions(nCaptions);
  const feats: Record<string, { img: Float32Array; txt: Float32Array }> = {};
  for (const p of ['fp32', 'int8'] as const) {
    const model = await loadModel(dirs[p], { provider: 'cpu', preprocessWorkers: 1 });
    try {
      feats[p] = await heldOutFeatures(model, nImages, captions);
    } finally {
      await model.close();
    }
  }
  const E = config.model_cfg.embed_dim;
  const image = cosineSummary(rowCosines(feats.int8.img, feats.fp32.img, E));
  const text = cosineSummary(rowCosines(feats.int8.txt, feats.fp32.txt, E));
  const m = manifest.int8!;
  print({
    section,
    model: `ViT-L-14 (seeded random weights${reuse ? ', the bench:int8 pair' : ''})`,
    calibration_samples: manifest.int8!.calibration.images,
    eval_images: nImages,
    eval_captions: nCaptions,
    image_cosine_to_fp32: image,
    text_cosine_to_fp32: text,
    ...layerCounts(manifest),
    fp32_layers: [...m.towers.visual.fp32_layers, ...m.towers.textual.fp32_layers],
    calibration_cosine: { visual: m.towers.visual.cosine_to_fp32, textual: m.towers.textual.cosine_to_fp32 },
    ...(reuse ? {} : { write_fp32_s: (t1 - t0) / 1000, convert_int8_s: (t2 - t1) / 1000 }),
  });
  judgeCosine(`${section} ViT-L/14 image`, image);
  judgeCosine(`${section} ViT-L/14 text`, text);
  if (!reuse) for (const d of Object.values(dirs)) fs.rmSync(d, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const sections = arg('sections', 'goldens,vitl,stress,retrieval').split(',');
  const goldenDir = path.resolve(arg('golden', path.join(__dirname, '..', '..', '..', 'shared', 'golden')));
  const samples = Number(arg('samples', '256'));
  const vitlSamples = Number(arg('vitl-samples', '64'));
  const nImages = Number(arg('eval-images', '16'));
  const nCaptions = Number(arg('eval-captions', '64'));
  const keep = process.argv.includes('--keep') ? path.resolve(arg('keep', '')) : undefined;
  if (keep !== undefined) fs.mkdirSync(keep, { recursive: true });
  const scratch = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-acc-'));
  try {
    if (sections.includes('goldens')) {
      if (fs.existsSync(path.join(goldenDir, 'README.md'))) await goldens(scratch, goldenDir, samples);
      else process.stderr.write(`!!! SKIPPING goldens: no golden data at ${goldenDir} (--golden DIR) !!!\n`);
    }
    if (sections.includes('retrieval')) {
      const arch = arg('retrieval-arch', 'ViT-B-32');
      if (!isArchName(arch)) throw new Error(`unknown --retrieval-arch ${arch}`);
      const set = arg('retrieval-set', 'held-out');
      if (set !== 'held-out' && set !== 'plain')
        throw new Error(`--retrieval-set must be held-out or plain, got ${set}`);
      const schemes = arg('int8-activations', INT8_ACTIVATIONS.join(',')).split(',');
      for (const a of schemes)
        if (!INT8_ACTIVATIONS.includes(a as Int8Activations))
          throw new Error(`--int8-activations: unknown scheme ${a} (${INT8_ACTIVATIONS.join(', ')})`);
      const calibrations = arg('calibration', 'served').split(',');
      for (const c of calibrations)
        if (c !== 'served' && c !== 'generated')
          throw new Error(`--calibration: unknown kind ${c} (served, generated)`);
      await retrieval(
        {
          scratch,
          samples,
          arch,
          set,
          schemes: schemes as Int8Activations[],
          calibrations: calibrations as CalibrationKind[],
          epochs: Number(arg('retrieval-epochs', '100')),
          folds: Number(arg('retrieval-folds', '3')),
          ...(process.argv.includes('--int8-contract') && {
            contract: parseInt8ContractFlag(arg('int8-contract', '')),
          }),
        },
        print,
        (v) => verdicts.push(v),
      );
    }
    const benchCache = process.argv.includes('--bench-cache') ? path.resolve(arg('bench-cache', '')) : undefined;
    if (sections.includes('vitl')) await vitL(scratch, 'vitl', vitlSamples, nImages, nCaptions, benchCache);
    if (sections.includes('stress')) await vitL(scratch, 'stress', vitlSamples, nImages, nCaptions);
  } finally {
    if (keep === undefined) fs.rmSync(scratch, { recursive: true, force: true });
  }
  for (const v of verdicts) process.stdout.write(`${v.ok ? 'PASS' : 'FAIL'}  ${v.what}: ${v.detail}\n`);
  if (verdicts.some((v) => !v.ok)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`int8-accuracy: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
