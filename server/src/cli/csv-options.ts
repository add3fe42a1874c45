/**
 * The open_clip CSV column flags, shared by every command that reads an image–caption CSV
 * (`eval`, `finetune upload`, `convert` and `init-model` with `--calibration-data`), so their
 * names and defaults cannot drift apart.
 */
import type { Command } from 'commander';
import { DEFAULT_CSV_COLUMNS, unescapeCsvSeparator, type CsvColumns } from '../dataset/csv';

export interface CsvColumnFlags {
  csvImgKey: string;
  csvCaptionKey: string;
  csvSeparator: string;
}

export function csvColumnOptions(cmd: Command): Command {
  return cmd
    .option('--csv-img-key <key>', 'image path column', DEFAULT_CSV_COLUMNS.imgKey)
    .option('--csv-caption-key <key>', 'caption column', DEFAULT_CSV_COLUMNS.captionKey)
    .option('--csv-separator <sep>', 'column separator ("\\t" or tab for a tab)', DEFAULT_CSV_COLUMNS.separator);
}

/** The flags as readCsvDataset and the upload request take them: the separator unescaped. */
export function csvColumns(f: CsvColumnFlags): CsvColumns {
  return { imgKey: f.csvImgKey, captionKey: f.csvCaptionKey, separator: unescapeCsvSeparator(f.csvSeparator) };
}
