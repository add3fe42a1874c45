/**
 * The trainer's CSV files. The dataset stores `pairs.tsv` (paths relative to the dataset dir) and
 * optionally `validation.tsv`; open_clip's CsvDataset opens image paths as given, relative to its
 * working directory, so the job gets its own train.tsv / val.tsv with absolute paths. Without a
 * validation file, a seeded shuffle holds out `validation_split` of the pairs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readCsvDataset, type ImageCaptionPair } from '../../dataset/csv';
import { Rng } from '../../model/random-init';
import { PAIRS_FILE, VALIDATION_FILE } from '../dataset';
import { FineTuneValidationError } from '../method';

export interface TrainingData {
  trainFile: string;
  valFile?: string;
  trainPairs: number;
  valPairs: number;
}

/** One field as pandas.read_csv (sep='\t', quotechar '"') reads it back. */
function tsvField(s: string): string {
  return /[\t\n\r"]/.test(s) || s === '' ? `"${s.replace(/"/g, '""')}"` : s;
}

export function writeTsv(file: string, pairs: ImageCaptionPair[]): void {
  const lines = ['filepath\ttitle'];
  for (const p of pairs) lines.push(`${tsvField(p.image)}\t${tsvField(p.caption)}`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

/** Fisher–Yates with clipserve's seeded generator: the same seed always holds out the same pairs. */
function seededShuffle<T>(items: T[], seed: number): T[] {
  const out = items.slice();
  const rng = new Rng(seed, 'finetune-full-validation-split');
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.nextU32() % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

export function prepareTrainingData(opts: {
  datasetDir: string;
  outDir: string;
  validationSplit: number;
  seed: number;
}): TrainingData {
  const pairsFile = path.join(opts.datasetDir, PAIRS_FILE);
  if (!fs.existsSync(pairsFile))
    throw new FineTuneValidationError(`full fine-tune: the dataset has no ${PAIRS_FILE} (${opts.datasetDir})`);
  const pairs = readCsvDataset(pairsFile);
  const validationFile = path.join(opts.datasetDir, VALIDATION_FILE);
  let train: ImageCaptionPair[];
  let val: ImageCaptionPair[];
  if (fs.existsSync(validationFile)) {
    train = pairs;
    val = readCsvDataset(validationFile);
  } else {
    const held = Math.floor(pairs.length * opts.validationSplit);
    const shuffled = seededShuffle(pairs, opts.seed);
    val = shuffled.slice(0, held);
    // Training keeps the dataset's order; the trainer shuffles every epoch itself.
    const heldOut = new Set(val);
    train = pairs.filter((p) => !heldOut.has(p));
  }
  if (train.length === 0)
    throw new FineTuneValidationError('full fine-tune: no training pairs left after the validation split');
  fs.mkdirSync(opts.outDir, { recursive: true });
  const trainFile = path.join(opts.outDir, 'train.tsv');
  writeTsv(trainFile, train);
  let valFile: string | undefined;
  if (val.length > 0) {
    valFile = path.join(opts.outDir, 'val.tsv');
    writeTsv(valFile, val);
  }
  return { trainFile, valFile, trainPairs: train.length, valPairs: val.length };
}
