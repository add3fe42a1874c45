/**
 * Checkpoint → deployable bundle: reads an open_clip model (directory or checkpoint file), checks
 * it against its config, loads and checks the vocabulary, and hands everything to the bundle
 * writer. Shared by `clipserve convert` and `clipserve pull`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUNDLE_PRECISIONS, writeBundle, type BundlePrecision } from '../model/bundle';
import type { CalibrationPass, Int8Settings } from '../model/int8';
import type { OpenClipConfig } from '../model/config';
import { readOpenClipDir, type OpenClipSource } from './index';
import { loadVocab, resolveVocabSource, type VocabSource } from './vocab';

export type Precision = BundlePrecision;

/** Checks a `--precision` flag (convert, pull, init-model). */
export function parsePrecisionFlag(p: string): Precision {
  if (!(BUNDLE_PRECISIONS as readonly string[]).includes(p))
    throw new Error(`--precision must be ${BUNDLE_PRECISIONS.join(', ')}, got "${p}"`);
  return p as Precision;
}

/** Checks a `--calibration-samples` flag (int8 conversions). */
export function parseCalibrationSamplesFlag(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1 || n > 100000)
    throw new Error(`--calibration-samples must be an integer in [1, 100000], got "${v}"`);
  return n;
}

export interface ConvertOptions {
  /** An open_clip model directory or a checkpoint file (e.g. epoch_N.pt). */
  input: string;
  outDir: string;
  /** Vocabulary file or directory; defaults to one found beside the checkpoint. */
  vocab?: string;
  name?: string;
  version?: string;
  precision?: Precision;
  /** int8: calibration size and drift bound. */
  int8Settings?: Partial<Int8Settings>;
  /** open_clip_config.json to use instead of the one beside the checkpoint. */
  config?: string;
  /** Extra provenance recorded in the bundle (e.g. the hub repo and commit). */
  provenance?: Record<string, string>;
  onProgress?: (phase: 'read' | 'write', done: number, total: number) => void;
  /** int8: calibration progress per tower and pass, in samples. */
  onCalibration?: (tower: 'visual' | 'textual', pass: CalibrationPass, done: number, total: number) => void;
}

export interface ConvertResult {
  outDir: string;
  name: string;
  version: string;
  config: OpenClipConfig;
  source: OpenClipSource;
  vocab: VocabSource;
}

const GENERIC_STEMS = new Set(['open_clip_model', 'open_clip_pytorch_model', 'model', 'pytorch_model']);

/** A readable default model name: the directory name, or the checkpoint's stem (epoch_3). */
export function defaultModelName(input: string): string {
  const abs = path.resolve(input);
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) return path.basename(abs);
  const stem = path.basename(abs).replace(/\.[^.]+$/, '');
  return GENERIC_STEMS.has(stem) ? path.basename(path.dirname(abs)) : stem;
}

export async function convertCheckpoint(opts: ConvertOptions): Promise<ConvertResult> {
  const inputIsDir = fs.existsSync(opts.input) && fs.statSync(opts.input).isDirectory();
  const checkpointDir = inputIsDir ? opts.input : path.dirname(opts.input);
  // Vocabulary first: a missing vocab should fail before reading a 1.7 GB checkpoint.
  const vocabSource = resolveVocabSource(opts.vocab, checkpointDir);
  const { config, stateDict, source } = await readOpenClipDir(opts.input, {
    config: opts.config,
    onProgress: (done, total) => opts.onProgress?.('read', done, total),
  });
  const vocab = await loadVocab(vocabSource, config.model_cfg.text_cfg.vocab_size);
  const name = opts.name ?? defaultModelName(opts.input);
  const version = opts.version ?? '1';
  try {
    await writeBundle({
      outDir: opts.outDir,
      name,
      version,
      config,
      stateDict,
      vocabFile: vocab.mergesFile,
      precision: opts.precision ?? 'fp32',
      int8Settings: opts.int8Settings,
      source: {
        weights: path.resolve(source.weightsFile),
        config: path.resolve(source.configFile),
        format: source.format,
        ...opts.provenance,
      },
      onProgress: (done: number, total: number) => opts.onProgress?.('write', done, total),
      onCalibration: opts.onCalibration,
    });
  } finally {
    vocab.cleanup();
  }
  return { outDir: opts.outDir, name, version, config, source, vocab: vocabSource };
}
