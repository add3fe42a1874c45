/**
 * The int8 calibration flags of `convert` and `init-model`, in one place so their names, defaults
 * and checks cannot drift apart: how many samples, and (optionally) the served data to calibrate
 * on, as an open_clip image–caption CSV read with the same column flags as `eval`.
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
}

export function int8Options(cmd: Command): Command {
  return csvColumnOptions(
    cmd
      .option(
        '--calibration-samples <n>',
        'int8: calibration images and captions (each) run to choose the int8 layers (default 256)',
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
  ].filter(Boolean);
  if (precision !== 'int8' && given.length)
    throw new Error(`${given.join(' and ')} apply to --precision int8 only (got --precision ${precision})`);
  if (f.calibrationSamples !== undefined) settings.samples = parseCalibrationSamplesFlag(f.calibrationSamples);
  if (f.calibrationData !== undefined)
    settings.data = {
      pairs: readCsvDataset(f.calibrationData, csvColumns(f)),
      source: `--calibration-data ${path.resolve(f.calibrationData)}`,
    };
  return settings;
}
