/**
 * The open_clip CSV column flags, shared by every command that reads an image–caption CSV
 * (`eval`, `finetune upload`), so their names and defaults cannot drift apart.
 */
import type { Command } from 'commander';
import { unescapeCsvSeparator } from '../eval/csv';

export interface CsvColumnFlags {
  csvImgKey: string;
  csvCaptionKey: string;
  csvSeparator: string;
}

export function csvColumnOptions(cmd: Command): Command {
  return cmd
    .option('--csv-img-key <key>', 'image path column', 'filepath')
    .option('--csv-caption-key <key>', 'caption column', 'title')
    .option('--csv-separator <sep>', 'column separator ("\\t" or tab for a tab)', '\t');
}

/** The flags as readCsvDataset and the upload request take them: the separator unescaped. */
export function csvColumns(f: CsvColumnFlags): { imgKey: string; captionKey: string; separator: string } {
  return { imgKey: f.csvImgKey, captionKey: f.csvCaptionKey, separator: unescapeCsvSeparator(f.csvSeparator) };
}
