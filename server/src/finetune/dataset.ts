/**
 * Datasets in the data directory: each one a directory `datasets/<id>/` holding `pairs.tsv`
 * (open_clip's CSV format: a `filepath<TAB>title` header, paths relative to the dataset directory)
 * and, for uploaded pairs and archives, the images. Ingestion never lets a path escape the data
 * directory (zip entries, CSV rows and CSV files named by path are all checked); validation
 * reports every unreadable image and empty caption by its 1-based data row.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { verifyImage } from '../preprocess/decode';
import { DEFAULT_IMAGE_LIMITS, type ImageLimits } from '../preprocess/errors';
import * as yauzl from 'yauzl';
import { parseCsv } from '../eval/csv';
import type { DatasetFormat, DatasetRecord, Store } from '../store/store';

export const PAIRS_FILE = 'pairs.tsv';
/** A dataset's optional held-out pairs, in the same format as PAIRS_FILE. */
export const VALIDATION_FILE = 'validation.tsv';

export class DatasetError extends Error {
  constructor(message: string, readonly rows: number[] = []) {
    super(message);
    this.name = 'DatasetError';
  }
}

/** A dataset id or file that does not exist (NOT_FOUND, where other DatasetErrors are bad input). */
export class DatasetNotFoundError extends DatasetError {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetNotFoundError';
  }
}

export interface CsvColumns {
  imgKey: string;
  captionKey: string;
  separator: string;
}

export const DEFAULT_COLUMNS: CsvColumns = { imgKey: 'filepath', captionKey: 'title', separator: '\t' };

export interface DatasetRow {
  /** 1-based data row (the header is not counted). */
  row: number;
  /** Absolute image path. */
  image: string;
  caption: string;
}

const newId = (prefix: string): string => `${prefix}-${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').toLowerCase()}`;

/** True when `p` (absolute, normalised) lies inside `root`. */
export function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of `p` (symlinks resolved) when it exists; `p` itself otherwise. */
function realPathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

function csvField(s: string): string {
  return /[\t\n\r"]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Writes `dir/file` (a tab-separated filepath/title file) through a temporary file and a rename. */
export function writePairsFile(dir: string, rows: { rel: string; caption: string }[], file = PAIRS_FILE): void {
  const text = ['filepath\ttitle', ...rows.map((r) => `${csvField(r.rel)}\t${csvField(r.caption)}`)].join('\n') + '\n';
  const tmp = path.join(dir, `${file}.tmp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, path.join(dir, file));
}

/** Parses a CSV into rows, resolving image paths against `base`; rows whose path escapes `root` are errors. */
function parseRows(text: string, cols: CsvColumns, base: string, root: string, what: string): DatasetRow[] {
  let records: string[][];
  try {
    records = parseCsv(text, cols.separator);
  } catch (err) {
    throw new DatasetError(`${what}: ${(err as Error).message}`);
  }
  if (records.length < 2) throw new DatasetError(`${what}: no data rows (expected a header row and at least one pair)`);
  const header = records[0];
  const imgCol = header.indexOf(cols.imgKey);
  const capCol = header.indexOf(cols.captionKey);
  if (imgCol < 0 || capCol < 0) throw new DatasetError(`${what}: the header [${header.join(', ')}] lacks the "${cols.imgKey}" or "${cols.captionKey}" column`);
  const rows: DatasetRow[] = [];
  const outside: number[] = [];
  const realRoot = realPathOr(root);
  for (let r = 1; r < records.length; r++) {
    const rec = records[r];
    const file = rec[imgCol] ?? '';
    const image = path.resolve(base, file);
    // Lexically inside is not enough: a symlink inside the data directory may point anywhere, so
    // an existing file is also judged by where it really is.
    if (!file || !isInside(root, image) || !isInside(realRoot, realPathOr(image))) outside.push(r);
    rows.push({ row: r, image, caption: rec[capCol] ?? '' });
  }
  if (outside.length) throw new DatasetError(`${what}: image paths outside the data directory (or empty) in rows ${outside.slice(0, 20).join(', ')}${outside.length > 20 ? ', …' : ''}`, outside);
  return rows;
}

/** The rows of a stored dataset directory. */
export function readDatasetRows(datasetDir: string, dataDir: string, file = PAIRS_FILE): DatasetRow[] {
  return parseRows(fs.readFileSync(path.join(datasetDir, file), 'utf8'), DEFAULT_COLUMNS, datasetDir, dataDir, file);
}

/**
 * Checks every row: the caption must have non-space text and the image must decode. Returns the
 * problems (empty when the dataset is usable), each naming its row.
 */
export async function validateDatasetRows(
  rows: DatasetRow[],
  signal?: AbortSignal,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
  verify: (bytes: Uint8Array, limits: ImageLimits) => Promise<void> = verifyImage,
): Promise<{ row: number; problem: string }[]> {
  const problems: { row: number; problem: string }[] = [];
  for (const r of rows) {
    if (signal?.aborted) break;
    if (r.caption.trim() === '') problems.push({ row: r.row, problem: 'empty caption' });
    try {
      const bytes = await fs.promises.readFile(r.image);
      // Decoding to pixels (not just the header) catches truncated files; the serving decoder,
      // with its limits and formats, so that what passes here can be embedded.
      await verify(bytes, limits);
    } catch (err) {
      problems.push({ row: r.row, problem: `unreadable image ${path.basename(r.image)}: ${(err as Error).message}` });
    }
  }
  return problems;
}

export interface UploadHeader {
  name: string;
  format: DatasetFormat;
  columns?: Partial<CsvColumns>;
}

export interface DatasetLimits {
  /** Most bytes an upload (or an archive's extracted content) may take. */
  maxBytes: number;
  maxPairs: number;
}

export const DEFAULT_DATASET_LIMITS: DatasetLimits = { maxBytes: 4 * 1024 ** 3, maxPairs: 5_000_000 };

/** One upload in progress: pairs or chunks go to a staging directory that becomes the dataset on finish. */
export class DatasetUpload {
  readonly id = newId('ds');
  private readonly staging: string;
  private readonly rows: { rel: string; caption: string }[] = [];
  private bytes = 0;
  private chunkFd: number | undefined;
  private done = false;

  constructor(private readonly catalog: DatasetCatalog, readonly header: UploadHeader) {
    this.staging = path.join(catalog.datasetsDir, `.upload-${this.id}`);
    fs.mkdirSync(this.staging, { recursive: true });
  }

  private count(n: number): void {
    this.bytes += n;
    if (this.bytes > this.catalog.limits.maxBytes) throw new DatasetError(`upload exceeds the ${this.catalog.limits.maxBytes}-byte limit`);
  }

  addPair(image: Uint8Array, caption: string): void {
    if (this.header.format !== 'pairs') throw new DatasetError(`a ${this.header.format} upload takes chunks, not pairs`);
    if (this.rows.length >= this.catalog.limits.maxPairs) throw new DatasetError(`upload exceeds ${this.catalog.limits.maxPairs} pairs`);
    this.count(image.byteLength);
    const rel = path.join('images', `${String(this.rows.length + 1).padStart(7, '0')}.img`);
    fs.mkdirSync(path.join(this.staging, 'images'), { recursive: true });
    fs.writeFileSync(path.join(this.staging, rel), image);
    this.rows.push({ rel, caption });
  }

  addChunk(bytes: Uint8Array): void {
    if (this.header.format === 'pairs') throw new DatasetError('a pairs upload takes pairs, not chunks');
    this.count(bytes.byteLength);
    this.chunkFd ??= fs.openSync(path.join(this.staging, this.header.format === 'zip' ? 'upload.zip' : 'upload.csv'), 'w');
    fs.writeSync(this.chunkFd, bytes);
  }

  async finish(): Promise<DatasetRecord> {
    if (this.done) throw new DatasetError('upload already finished');
    this.done = true;
    try {
      if (this.chunkFd !== undefined) {
        // Forget the number as it is closed: the OS hands it to the next open (yauzl's, below), and a
        // second close from abort() would then close someone else's file.
        const fd = this.chunkFd;
        this.chunkFd = undefined;
        fs.closeSync(fd);
      }
      const cols = { ...DEFAULT_COLUMNS, ...definedOnly(this.header.columns ?? {}) };
      let numPairs: number;
      if (this.header.format === 'pairs') {
        if (this.rows.length === 0) throw new DatasetError('the upload holds no pairs');
        writePairsFile(this.staging, this.rows);
        numPairs = this.rows.length;
      } else if (this.header.format === 'zip') {
        numPairs = await this.finishZip(cols);
      } else {
        const file = path.join(this.staging, 'upload.csv');
        if (!fs.existsSync(file)) throw new DatasetError('the upload holds no CSV bytes');
        numPairs = this.catalog.writeCsvReference(fs.readFileSync(file, 'utf8'), cols, this.catalog.dataDir, this.staging, 'uploaded CSV');
      }
      const dir = path.join(this.catalog.datasetsDir, this.id);
      fs.renameSync(this.staging, dir);
      const record: DatasetRecord = { id: this.id, name: this.header.name, format: this.header.format, dir, numPairs, bytes: this.bytes, createdAt: Math.floor(Date.now() / 1000) };
      this.catalog.store.insertDataset(record);
      return record;
    } catch (err) {
      this.abort();
      throw err;
    }
  }

  abort(): void {
    this.done = true;
    if (this.chunkFd !== undefined) {
      try {
        fs.closeSync(this.chunkFd);
      } catch {
        /* already closed */
      }
      this.chunkFd = undefined;
    }
    fs.rmSync(this.staging, { recursive: true, force: true });
  }

  private async finishZip(cols: CsvColumns): Promise<number> {
    const zipFile = path.join(this.staging, 'upload.zip');
    if (!fs.existsSync(zipFile)) throw new DatasetError('the upload holds no archive bytes');
    const out = path.join(this.staging, 'files');
    const csvs = await extractZip(zipFile, out, this.catalog.limits.maxBytes);
    fs.rmSync(zipFile);
    // The CSV nearest the archive root names the pairs.
    const csv = csvs.sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b))[0];
    if (!csv) throw new DatasetError('the archive holds no .csv or .tsv file');
    const csvPath = path.join(out, csv);
    const rows = parseRows(fs.readFileSync(csvPath, 'utf8'), cols, path.dirname(csvPath), out, `archive ${csv}`);
    writePairsFile(this.staging, rows.map((r) => ({ rel: path.relative(this.staging, r.image), caption: r.caption })));
    return rows.length;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== '')) as Partial<T>;
}

/** Extracts a zip (yauzl rejects absolute and `..` entry names), bounded in total size; returns the CSV/TSV entry names. */
function extractZip(zipFile: string, outDir: string, maxBytes: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    yauzl.open(zipFile, { lazyEntries: true, strictFileNames: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) return reject(new DatasetError(`not a readable zip archive: ${err?.message ?? 'unknown error'}`));
      let total = 0;
      const csvs: string[] = [];
      const fail = (e: unknown) => {
        zip.close();
        reject(e instanceof DatasetError ? e : new DatasetError(`bad archive: ${(e as Error).message}`));
      };
      zip.on('error', fail);
      zip.on('end', () => resolve(csvs));
      zip.on('entry', (entry: yauzl.Entry) => {
        const name = entry.fileName;
        const dest = path.resolve(outDir, name);
        if (!isInside(outDir, dest)) return fail(new DatasetError(`archive entry ${JSON.stringify(name)} points outside the dataset`));
        if (name.endsWith('/')) {
          fs.mkdirSync(dest, { recursive: true });
          return zip.readEntry();
        }
        total += entry.uncompressedSize;
        if (total > maxBytes) return fail(new DatasetError(`archive expands beyond the ${maxBytes}-byte limit`));
        if (/\.(csv|tsv)$/i.test(name)) csvs.push(name);
        fs.mkdirSync(path.dirname(dest), { recursive: true });
        zip.openReadStream(entry, (e, stream) => {
          if (e || !stream) return fail(e ?? new Error('no stream'));
          const w = fs.createWriteStream(dest);
          stream.on('error', fail);
          w.on('error', fail);
          w.on('finish', () => zip.readEntry());
          stream.pipe(w);
        });
      });
      zip.readEntry();
    });
  });
}

/** The datasets of one data directory. */
export class DatasetCatalog {
  readonly datasetsDir: string;

  constructor(readonly store: Store, readonly dataDir: string, readonly limits: DatasetLimits = DEFAULT_DATASET_LIMITS) {
    this.datasetsDir = path.join(dataDir, 'datasets');
    fs.mkdirSync(this.datasetsDir, { recursive: true });
    // Staging directories of uploads a crash interrupted are garbage.
    for (const e of fs.readdirSync(this.datasetsDir)) if (e.startsWith('.upload-')) fs.rmSync(path.join(this.datasetsDir, e), { recursive: true, force: true });
  }

  beginUpload(header: UploadHeader): DatasetUpload {
    if (!['pairs', 'zip', 'csv'].includes(header.format)) throw new DatasetError(`unknown dataset format ${JSON.stringify(header.format)}`);
    return new DatasetUpload(this, header);
  }

  /** Writes `pairs.tsv` into `dir` for a CSV whose image paths are relative to `base`; returns the row count. */
  writeCsvReference(text: string, cols: CsvColumns, base: string, dir: string, what: string): number {
    const rows = parseRows(text, cols, base, this.dataDir, what);
    writePairsFile(dir, rows.map((r) => ({ rel: path.relative(dir, r.image), caption: r.caption })));
    return rows.length;
  }

  /**
   * A training/validation file reference: a dataset id, or a CSV path inside the data directory
   * (relative to it, or absolute), which is registered as a `csv` dataset. Paths outside the data
   * directory are refused.
   */
  resolve(ref: string): DatasetRecord {
    const known = this.store.getDataset(ref);
    if (known) return known;
    if (/^ds-[a-z0-9]+$/.test(ref)) throw new DatasetNotFoundError(`no dataset ${ref}`);
    const abs = path.resolve(this.dataDir, ref);
    let real: string;
    try {
      real = fs.realpathSync(abs);
    } catch {
      if (!isInside(this.dataDir, abs)) throw new DatasetError(`dataset path ${ref} is outside the data directory`);
      throw new DatasetNotFoundError(`no dataset file ${ref} in the data directory`);
    }
    if (!isInside(fs.realpathSync(this.dataDir), real)) throw new DatasetError(`dataset path ${ref} is outside the data directory`);
    const id = newId('ds');
    const staging = path.join(this.datasetsDir, `.upload-${id}`);
    fs.mkdirSync(staging, { recursive: true });
    try {
      const numPairs = this.writeCsvReference(fs.readFileSync(real, 'utf8'), DEFAULT_COLUMNS, path.dirname(real), staging, ref);
      const dir = path.join(this.datasetsDir, id);
      fs.renameSync(staging, dir);
      const record: DatasetRecord = { id, name: path.basename(real), format: 'csv', dir, numPairs, bytes: fs.statSync(real).size, createdAt: Math.floor(Date.now() / 1000) };
      this.store.insertDataset(record);
      return record;
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  }
}
