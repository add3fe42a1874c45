/**
 * open_clip's CSV dataset format (`--csv-img-key filepath --csv-caption-key title
 * --csv-separator '\t'`): a header row naming the columns, then one image path and caption per
 * row. Parsed like pandas.read_csv with its defaults: fields may be quoted with `"` (a doubled
 * `""` is a literal quote, and quoted fields may span lines), blank lines are skipped. Image paths
 * are resolved against the CSV file's directory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export class CsvDatasetError extends Error {
  constructor(message: string, readonly file?: string) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'CsvDatasetError';
  }
}

export interface CsvOptions {
  imgKey?: string;
  captionKey?: string;
  separator?: string;
}

/** A `--csv-separator` flag: shell users type `'\t'` literally; accept the escape (or `tab`) as well as the character. */
export function unescapeCsvSeparator(s: string): string {
  const map: Record<string, string> = { '\\t': '\t', tab: '\t', '\\n': '\n' };
  return map[s] ?? s;
}

export interface ImageCaptionPair {
  /** Absolute path of the image file. */
  image: string;
  caption: string;
}

/** Splits CSV text into records of fields. */
export function parseCsv(text: string, separator: string): string[][] {
  if (separator.length !== 1) throw new CsvDatasetError(`separator must be a single character, got ${JSON.stringify(separator)}`);
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let quoted = false;
  let fieldStarted = false;
  const src = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // UTF-8 BOM
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (quoted) {
      if (c === '"') {
        if (src[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += c;
      continue;
    }
    if (c === '"' && field === '') {
      quoted = true;
      fieldStarted = true;
    } else if (c === separator) {
      record.push(field);
      field = '';
      fieldStarted = true;
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && src[i + 1] === '\n') i++;
      if (fieldStarted || field !== '' || record.length) {
        record.push(field);
        records.push(record);
      }
      record = [];
      field = '';
      fieldStarted = false;
    } else {
      field += c;
      fieldStarted = true;
    }
  }
  if (quoted) throw new CsvDatasetError('unterminated quoted field');
  if (fieldStarted || field !== '' || record.length) {
    record.push(field);
    records.push(record);
  }
  return records;
}

export function readCsvDataset(file: string, opts: CsvOptions = {}): ImageCaptionPair[] {
  const imgKey = opts.imgKey ?? 'filepath';
  const captionKey = opts.captionKey ?? 'title';
  const separator = opts.separator ?? '\t';
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CsvDatasetError(`cannot read: ${(e as Error).message}`, file);
  }
  let records: string[][];
  try {
    records = parseCsv(text, separator);
  } catch (e) {
    throw new CsvDatasetError((e as Error).message, file);
  }
  if (records.length === 0) throw new CsvDatasetError('empty file (expected a header row)', file);
  const header = records[0];
  const imgCol = header.indexOf(imgKey);
  const capCol = header.indexOf(captionKey);
  const sepName = separator === '\t' ? 'tab' : JSON.stringify(separator);
  for (const [key, col, flag] of [[imgKey, imgCol, '--csv-img-key'], [captionKey, capCol, '--csv-caption-key']] as const) {
    if (col < 0) {
      throw new CsvDatasetError(`no column "${key}" in the header [${header.join(', ')}] (separator ${sepName}); choose the column with ${flag} or the separator with --csv-separator`, file);
    }
  }
  const base = path.dirname(path.resolve(file));
  const rows: ImageCaptionPair[] = [];
  for (let r = 1; r < records.length; r++) {
    const rec = records[r];
    if (rec.length !== header.length) throw new CsvDatasetError(`row ${r + 1} has ${rec.length} fields, the header has ${header.length}`, file);
    const image = rec[imgCol];
    if (!image) throw new CsvDatasetError(`row ${r + 1} has an empty "${imgKey}"`, file);
    rows.push({ image: path.resolve(base, image), caption: rec[capCol] });
  }
  if (rows.length === 0) throw new CsvDatasetError('no data rows', file);
  return rows;
}
