/**
 * Bundles with seeded random weights: `clipserve init-model` and the demo model that `serve`
 * falls back to. Without a vocabulary file they carry the project's small demo BPE vocabulary,
 * and the text tower's vocab_size is set to match it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildDemoVocab, ClipTokenizer } from '../tokenizer';
import { writeBundle, type BundleManifest, type BundlePrecision } from './bundle';
import type { Int8Settings } from './int8';
import { ARCH_PRESETS, resolveConfig, type ArchName, type OpenClipConfig } from './config';
import { randomStateDict } from './random-init';

export interface RandomBundleOptions {
  arch: ArchName;
  seed: number;
  outDir: string;
  /** gzip BPE merges file; default: the demo vocabulary. */
  vocabFile?: string;
  precision?: BundlePrecision;
  int8Settings?: Partial<Int8Settings>;
  name?: string;
  demo?: boolean;
  /** Reports weight generation (phase 'init', in parameters), writing (phase 'write', in bytes)
   *  and, for int8, calibration (phase 'calibrate', in samples of one tower's pass). */
  onProgress?: (phase: 'init' | 'write' | 'calibrate', done: number, total: number) => void;
}

export function isArchName(s: string): s is ArchName {
  return Object.prototype.hasOwnProperty.call(ARCH_PRESETS, s);
}

export async function writeRandomBundle(o: RandomBundleOptions): Promise<BundleManifest> {
  if (!isArchName(o.arch))
    throw new Error(`unknown arch ${JSON.stringify(o.arch)} (expected one of ${Object.keys(ARCH_PRESETS).join(', ')})`);
  const preset = ARCH_PRESETS[o.arch];
  let vocabFile = o.vocabFile;
  let scratch: string | undefined;
  let tokenizer: ClipTokenizer;
  if (vocabFile) {
    tokenizer = ClipTokenizer.fromMergesFile(vocabFile);
  } else {
    tokenizer = ClipTokenizer.fromMerges(buildDemoVocab());
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-vocab-'));
    vocabFile = path.join(scratch, 'demo_vocab.txt.gz');
    tokenizer.writeMergesFile(vocabFile);
  }
  try {
    const config: OpenClipConfig = resolveConfig({
      model_cfg: { ...preset, text_cfg: { ...preset.text_cfg, vocab_size: tokenizer.vocabSize } },
    });
    const stateDict = randomStateDict(config.model_cfg, o.seed, (d, t) => o.onProgress?.('init', d, t));
    return await writeBundle({
      outDir: o.outDir,
      name: o.name ?? `random-${o.arch}`,
      version: `seed-${o.seed}`,
      config,
      stateDict,
      vocabFile,
      demo: o.demo ?? false,
      precision: o.precision ?? 'fp32',
      int8Settings: o.int8Settings,
      source: {
        kind: 'random-init',
        arch: o.arch,
        seed: o.seed,
        vocab: o.vocabFile ? path.basename(o.vocabFile) : 'clipserve demo vocabulary',
      },
      onProgress: (d, t) => o.onProgress?.('write', d, t),
      onCalibration: (_tower, _pass, d, t) => o.onProgress?.('calibrate', d, t),
    });
  } finally {
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}
