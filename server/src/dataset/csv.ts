/**
 * open_clip's CSV dataset format (`--csv-img-key filepath --csv-caption-key title
 * --csv-separator '\t'`): a header row naming the columns, then one image path and caption per
 * row. Parsed like pandas.read_csv with its defaults: fields may be quoted with `"` (a doubled
 * `""` is a literal quote, and quoted fields may span lines), blank lines are skipped. Image paths
 * are resolved against the CSV file's directory. One module for the format, used by `eval`, the
 * fine-tune dataset catalogue (finetune/dataset-csv.ts streams it with the catalogue's limits) and
 * the CLI's column flags (cli/csv-options.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export class CsvDatasetError extends Error {
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'CsvDatasetError';
  }
}

/** The columns of an image–caption CSV: which header names the image path and the caption, and the separator. */
export interface CsvColumns {
  imgKey: string;
  captionKey: string;
  separator: string;
}

/** open_clip_train's own defaults (`--csv-img-key filepath --csv-caption-key title --csv-separator '\t'`). */
export const DEFAULT_CSV_COLUMNS: CsvColumns = { imgKey: 'filepath', captionKey: 'title', separator: '\t' };

export type CsvOptions = Partial<CsvColumns>;

/** A field as the format writes it: quoted when it holds a tab, newline or quote (a quote doubled). */
export function csvField(s: string): string {
  return /[\t\n\r"]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
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

/**
 * An incremental CSV parser: text goes in piece by piece (`push`), complete records come out, so
 * a large file is parsed a chunk per turn of the event loop instead of all at once. A `\r\n` or a
 * `""` split across two pieces parses as if the text were whole.
 */
export class CsvParser {
  private record: string[] = [];
  private field = '';
  private quoted = false;
  private fieldStarted = false;
  /** A `"` ended the last piece inside a quoted field: the next character decides (`""` or end). */
  private pendingQuote = false;
  /** A `\r` ended the last piece: a `\n` starting the next one belongs to it. */
  private pendingCr = false;
  private first = true;

  constructor(private readonly separator: string) {
    if (separator.length !== 1)
      throw new CsvDatasetError(`separator must be a single character, got ${JSON.stringify(separator)}`);
  }

  /** Parses the next piece of text; returns the records it completed. */
  push(text: string): string[][] {
    const records: string[][] = [];
    let src = text;
    if (this.first && src.length > 0) {
      this.first = false;
      if (src.charCodeAt(0) === 0xfeff) src = src.slice(1); // UTF-8 BOM
    }
    let i = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (src[0] === '\n') i = 1;
    }
    if (this.pendingQuote && src.length > 0) {
      this.pendingQuote = false;
      if (src[0] === '"') {
        this.field += '"';
        i = 1;
      } else this.quoted = false;
    }
    const sep = this.separator;
    for (; i < src.length; i++) {
      const c = src[i];
      if (this.quoted) {
        if (c === '"') {
          if (i + 1 === src.length) this.pendingQuote = true;
          else if (src[i + 1] === '"') {
            this.field += '"';
            i++;
          } else this.quoted = false;
        } else this.field += c;
        continue;
      }
      if (c === '"' && this.field === '') {
        this.quoted = true;
        this.fieldStarted = true;
      } else if (c === sep) {
        this.record.push(this.field);
        this.field = '';
        this.fieldStarted = true;
      } else if (c === '\n' || c === '\r') {
        if (c === '\r') {
          if (i + 1 === src.length) this.pendingCr = true;
          else if (src[i + 1] === '\n') i++;
        }
        this.endRecord(records);
      } else {
        this.field += c;
        this.fieldStarted = true;
      }
    }
    return records;
  }

  /** The text is complete: returns the last record, if any; throws on an unterminated quote. */
  end(): string[][] {
    if (this.pendingQuote) {
      this.pendingQuote = false;
      this.quoted = false;
    }
    if (this.quoted) throw new CsvDatasetError('unterminated quoted field');
    const records: string[][] = [];
    this.endRecord(records);
    return records;
  }

  private endRecord(out: string[][]): void {
    if (this.fieldStarted || this.field !== '' || this.record.length) {
      this.record.push(this.field);
      out.push(this.record);
    }
    this.record = [];
    this.field = '';
    this.fieldStarted = false;
  }
}

/** Splits CSV text into records of fields. */
export function parseCsv(text: string, separator: string): string[][] {
  const parser = new CsvParser(separator);
  const records = parser.push(text);
  for (const r of parser.end()) records.push(r);
  return records;
}

export function readCsvDataset(file: string, opts: CsvOptions = {}): ImageCaptionPair[] {
  const imgKey = opts.imgKey ?? DEFAULT_CSV_COLUMNS.imgKey;
  const captionKey = opts.captionKey ?? DEFAULT_CSV_COLUMNS.captionKey;
  const separator = opts.separator ?? DEFAULT_CSV_COLUMNS.separator;
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
  for (const [key, col, flag] of [
    [imgKey, imgCol, '--csv-img-key'],
    [captionKey, capCol, '--csv-caption-key'],
  ] as const) {
    if (col < 0) {
      throw new CsvDatasetError(
        `no column "${key}" in the header [${header.join(', ')}] (separator ${sepName}); choose the column with ${flag} or the separator with --csv-separator`,
        file,
      );
    }
  }
  const base = path.dirname(path.resolve(file));
  const rows: ImageCaptionPair[] = [];
  for (let r = 1; r < records.length; r++) {
    const rec = records[r];
    if (rec.length !== header.length)
      throw new CsvDatasetError(`row ${r + 1} has ${rec.length} fields, the header has ${header.length}`, file);
    const image = rec[imgCol];
    if (!image) throw new CsvDatasetError(`row ${r + 1} has an empty "${imgKey}"`, file);
    rows.push({ image: path.resolve(base, image), caption: rec[capCol] });
  }
  if (rows.length === 0) throw new CsvDatasetError('no data rows', file);
  return rows;
}
