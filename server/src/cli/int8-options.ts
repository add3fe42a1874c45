/**
 * The int8 calibration flags of `convert` and `init-model`, in one place so their names, defaults
 * and checks cannot drift apart: how many samples, the end-to-end contract, and (optionally) the
 * served data to calibrate on, as an open_clip image–caption CSV read with the same column flags
 * as `eval`.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { parseCalibrationSamplesFlag } from '../checkpoint/convert';
import { readCsvDataset } from '../dataset/csv';
import type { Int8Settings } from '../model/int8';
import { csvColumnOptions, csvColumns, type CsvColumnFlags } from './csv-options';

export interface Int8Flags extends CsvColumnFlags {
  calibrationSamples?: string;
  calibrationData?: string;
  int8Contract?: string;
}

/** Checks an `--int8-contract <mean>,<min>` flag: the cosines to float32 the end-to-end check
 *  holds each tower to, each in (0, 1], the minimum not above the mean. */
export function parseInt8ContractFlag(v: string): { minMeanCosine: number; minCosine: number } {
  const parts = v.split(',');
  const [mean, min] = parts.map(Number);
  if (parts.length !== 2 || !(mean > 0 && mean <= 1) || !(min > 0 && min <= mean))
    throw new Error(`--int8-contract must be <mean>,<min> cosines with 0 < min ≤ mean ≤ 1, got "${v}"`);
  return { minMeanCosine: mean, minCosine: min };
}

export function int8Options(cmd: Command): Command {
  return csvColumnOptions(
    cmd
      .option(
        '--calibration-samples <n>',
        'int8: calibration images and captions (each) run to choose the int8 layers (default 256)',
      )
      .option(
        '--int8-contract <mean,min>',
        'int8: cosines to float32 each tower must keep on the calibration set, mean and minimum (default 0.999,0.995; tighten for retrieval that must not move, docs/int8.md)',
      )
      .option(
        '--calibration-data <csv>',
        'int8: calibrate on these image–caption pairs (the data the model will serve; a CSV as `eval` reads) instead of generated inputs',
      ),
  );
}

/** The int8 settings the flags ask for (nothing when none was given); the calibration flags of a
 *  conversion to another precision are a mistake, not something to ignore. */
export function int8SettingsFromFlags(f: Int8Flags, precision: string): Partial<Int8Settings> {
  const settings: Partial<Int8Settings> = {};
  const given = [
    f.calibrationSamples !== undefined && '--calibration-samples',
    f.calibrationData !== undefined && '--calibration-data',
    f.int8Contract !== undefined && '--int8-contract',
  ].filter(Boolean);
  if (precision !== 'int8' && given.length)
    throw new Error(
      `${given.join(' and ')} ${given.length > 1 ? 'apply' : 'applies'} to --precision int8 only (got --precision ${precision})`,
    );
  if (f.calibrationSamples !== undefined) settings.samples = parseCalibrationSamplesFlag(f.calibrationSamples);
  if (f.int8Contract !== undefined) Object.assign(settings, parseInt8ContractFlag(f.int8Contract));
  if (f.calibrationData !== undefined)
    settings.data = {
      pairs: readCsvDataset(f.calibrationData, csvColumns(f)),
      source: `--calibration-data ${path.resolve(f.calibrationData)}`,
    };
  return settings;
}
