/** Golden OpenCLIP models (../shared/golden/model/<name>) as clipserve bundles, plus their inputs
 *  and expected outputs, for the runtime/bundle/embed suites. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensors } from '../../server/src/checkpoint/safetensors';
import { writeBundle } from '../../server/src/model/bundle';
import { resolveConfig, type OpenClipConfig } from '../../server/src/model/config';
import { goldenPath, readF32, readI64 } from './shared';

export const GOLDEN_MODELS = ['tiny-gelu', 'tiny-quickgelu', 'small-l14like'] as const;
export type GoldenModel = (typeof GOLDEN_MODELS)[number];

export const GOLDEN_VOCAB = goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz');

export interface GoldenExpected {
  shapes: Record<string, number[]>;
  values: {
    image_features: number[][];
    text_features: number[][];
    image_features_normalized: number[][];
    text_features_normalized: number[][];
    logit_scale_exp: number;
    logits_per_image: number[][];
    logits_per_text: number[][];
  };
  text_pool_index: number[];
}

export function goldenConfig(name: GoldenModel): OpenClipConfig {
  return resolveConfig(JSON.parse(fs.readFileSync(goldenPath('model', name, 'open_clip_config.json'), 'utf8')));
}

export function goldenExpected(name: GoldenModel): GoldenExpected {
  return JSON.parse(fs.readFileSync(goldenPath('model', name, 'expected.json'), 'utf8')) as GoldenExpected;
}

export function goldenInputs(name: GoldenModel): {
  images: Float32Array;
  nImages: number;
  ids: Int32Array;
  nTexts: number;
  texts: string[];
  imageFiles: string[];
} {
  const index = JSON.parse(fs.readFileSync(goldenPath('model', name, 'index.json'), 'utf8'));
  const images = readF32(goldenPath('model', name, 'inputs_images.f32'));
  const ids64 = readI64(goldenPath('model', name, 'inputs_text_ids.i64'));
  const ids = Int32Array.from(ids64, (v) => Number(v));
  return {
    images,
    nImages: index.files.inputs_images.shape[0],
    ids,
    nTexts: index.files.inputs_text_ids.shape[0],
    texts: index.files.inputs_text_ids.texts,
    imageFiles: (index.files.inputs_images.source_images as string[]).map((f) =>
      path.join(goldenPath('preprocess'), f),
    ),
  };
}

export async function buildGoldenBundle(
  name: GoldenModel,
  outDir: string,
  precision: 'fp32' | 'fp16' = 'fp32',
): Promise<string> {
  const stateDict = await readSafetensors(goldenPath('model', name, 'open_clip_model.safetensors'));
  await writeBundle({
    outDir,
    name,
    version: 'golden',
    config: goldenConfig(name),
    stateDict,
    vocabFile: GOLDEN_VOCAB,
    precision,
    source: { golden: name },
  });
  return outDir;
}

/** Largest |a - e| / (atol + rtol·|e|); ≤ 1 means within tolerance. Also returns max abs error. */
export function closeness(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  atol: number,
  rtol: number,
): { ratio: number; maxAbs: number } {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let ratio = 0;
  let maxAbs = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxAbs)) maxAbs = d; // NaN propagates
    ratio = Math.max(ratio, d / (atol + rtol * Math.abs(expected[i])));
    if (Number.isNaN(d)) ratio = Infinity;
  }
  return { ratio, maxAbs };
}
