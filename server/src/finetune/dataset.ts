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
import { DEFAULT_IMAGE_LIMITS } from '../preprocess/errors';
import { parseCsv } from '../dataset/csv';
import type { DatasetFormat, DatasetRecord, Store } from '../store/store';
import { echo } from '../util/echo';
import { readCsvRows, resolveRowsInside, rowList, writePairsFileAsync } from './dataset-csv';
import {
  csvField,
  DatasetError,
  DatasetInUseError,
  DatasetNotFoundError,
  DEFAULT_COLUMNS,
  isInside,
  type CsvColumns,
  type DatasetRow,
} from './dataset-types';
import { extractZipDataset } from './zip-dataset';

export {
  csvField,
  DatasetError,
  DatasetInUseError,
  DatasetNotFoundError,
  DEFAULT_COLUMNS,
  isInside,
  type CsvColumns,
  type DatasetRow,
};

export const PAIRS_FILE = 'pairs.tsv';
/** A dataset's optional held-out pairs, in the same format as PAIRS_FILE. */
export const VALIDATION_FILE = 'validation.tsv';

const newId = (prefix: string): string =>
  `${prefix}-${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').toLowerCase()}`;

/** The real path of `p` (symlinks resolved) when it exists; `p` itself otherwise. */
function realPathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
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
  if (imgCol < 0 || capCol < 0)
    throw new DatasetError(
      `${what}: the header [${header.join(', ')}] lacks the "${cols.imgKey}" or "${cols.captionKey}" column`,
    );
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
  if (outside.length)
    throw new DatasetError(
      `${what}: image paths outside the data directory (or empty) in rows ${rowList(outside)}`,
      outside,
    );
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
  verify: (bytes: Uint8Array) => Promise<void> = (bytes) => verifyImage(bytes, DEFAULT_IMAGE_LIMITS),
): Promise<{ row: number; problem: string }[]> {
  const problems: { row: number; problem: string }[] = [];
  for (const r of rows) {
    if (signal?.aborted) break;
    if (r.caption.trim() === '') problems.push({ row: r.row, problem: 'empty caption' });
    try {
      const bytes = await fs.promises.readFile(r.image);
      // Decoding to pixels (not just the header) catches truncated files; the serving decoder,
      // with its limits and formats, so that what passes here can be embedded.
      await verify(bytes);
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
  /** Most bytes an upload (or the part of an archive its CSV names) may take. */
  maxBytes: number;
  /** Most pairs (CSV data rows) of one dataset. */
  maxPairs: number;
  /** Most entries a zip upload may list. */
  maxZipEntries: number;
  /** Most datasets one API key (or, without keys, the whole server) may keep. */
  maxDatasetsPerKey: number;
}

export const DEFAULT_DATASET_LIMITS: DatasetLimits = {
  maxBytes: 4 * 1024 ** 3,
  maxPairs: 1_000_000,
  maxZipEntries: 100_000,
  maxDatasetsPerKey: 1000,
};

/** Top-level names in the data directory that are the server's own (never a training_file). */
const OWN_ENTRIES = /^(clipserve\.db.*|jobs|models|datasets)$/;

/** One upload in progress: pairs or chunks go to a staging directory that becomes the dataset on finish. */
export class DatasetUpload {
  readonly id = newId('ds');
  private readonly staging: string;
  private readonly rows: { rel: string; caption: string }[] = [];
  private bytes = 0;
  private chunkFd: number | undefined;
  private done = false;

  constructor(
    private readonly catalog: DatasetCatalog,
    readonly header: UploadHeader,
    readonly owner: string,
  ) {
    this.staging = path.join(catalog.datasetsDir, `.upload-${this.id}`);
    fs.mkdirSync(this.staging, { recursive: true });
  }

  private count(n: number): void {
    this.bytes += n;
    if (this.bytes > this.catalog.limits.maxBytes)
      throw new DatasetError(`upload exceeds the ${this.catalog.limits.maxBytes}-byte limit`);
  }

  addPair(image: Uint8Array, caption: string): void {
    if (this.header.format !== 'pairs')
      throw new DatasetError(`a ${this.header.format} upload takes chunks, not pairs`);
    if (this.rows.length >= this.catalog.limits.maxPairs)
      throw new DatasetError(`upload exceeds ${this.catalog.limits.maxPairs} pairs`);
    this.count(image.byteLength);
    const rel = path.join('images', `${String(this.rows.length + 1).padStart(7, '0')}.img`);
    fs.mkdirSync(path.join(this.staging, 'images'), { recursive: true });
    fs.writeFileSync(path.join(this.staging, rel), image);
    this.rows.push({ rel, caption });
  }

  addChunk(bytes: Uint8Array): void {
    if (this.header.format === 'pairs') throw new DatasetError('a pairs upload takes pairs, not chunks');
    this.count(bytes.byteLength);
    this.chunkFd ??= fs.openSync(
      path.join(this.staging, this.header.format === 'zip' ? 'upload.zip' : 'upload.csv'),
      'w',
    );
    fs.writeSync(this.chunkFd, bytes);
  }

  /**
   * Turns the staged upload into a dataset. `signal` is the call's: once it aborts (the client
   * cancelled), nothing is registered and the staging directory goes, even if every byte arrived.
   * `beforeRegister` runs when everything is staged, just before the (synchronous) registration:
   * the caller's last chance to learn of a cancel that is on its way.
   */
  async finish(signal?: AbortSignal, beforeRegister?: () => Promise<void>): Promise<DatasetRecord> {
    if (this.done) throw new DatasetError('upload already finished');
    this.done = true;
    try {
      this.closeChunkFile();
      const cols = { ...DEFAULT_COLUMNS, ...definedOnly(this.header.columns ?? {}) };
      let numPairs: number;
      if (this.header.format === 'pairs') {
        if (this.rows.length === 0) throw new DatasetError('the upload holds no pairs');
        await writePairsFileAsync(this.staging, this.rows, PAIRS_FILE, (r) => r);
        numPairs = this.rows.length;
      } else if (this.header.format === 'zip') {
        const zipFile = path.join(this.staging, 'upload.zip');
        if (!fs.existsSync(zipFile)) throw new DatasetError('the upload holds no archive bytes');
        const { maxBytes, maxPairs, maxZipEntries } = this.catalog.limits;
        const { pairs } = await extractZipDataset(
          zipFile,
          this.staging,
          cols,
          { maxBytes, maxPairs, maxEntries: maxZipEntries },
          signal,
        );
        await fs.promises.rm(zipFile);
        await writePairsFileAsync(this.staging, pairs, PAIRS_FILE, (r) => r);
        numPairs = pairs.length;
      } else {
        const file = path.join(this.staging, 'upload.csv');
        if (!fs.existsSync(file)) throw new DatasetError('the upload holds no CSV bytes');
        numPairs = await this.catalog.writeCsvReference(
          file,
          cols,
          this.catalog.dataDir,
          this.staging,
          'uploaded CSV',
          signal,
        );
      }
      await beforeRegister?.();
      if (signal?.aborted) throw new DatasetError('upload cancelled');
      return this.catalog.register(this.staging, {
        id: this.id,
        name: this.header.name,
        format: this.header.format,
        numPairs,
        bytes: this.bytes,
        owner: this.owner,
      });
    } catch (err) {
      this.abort();
      throw err;
    }
  }

  /**
   * Drops the upload: its staging directory and everything in it. Never throws (it runs in call
   * listeners); what cannot be removed now is removed at the next start (`.upload-*`).
   */
  abort(): void {
    this.done = true;
    try {
      this.closeChunkFile();
    } catch {
      /* already closed */
    }
    try {
      fs.rmSync(this.staging, { recursive: true, force: true });
    } catch {
      /* left for the next start's sweep */
    }
  }

  private closeChunkFile(): void {
    if (this.chunkFd === undefined) return;
    // Forget the number as it is closed: the OS hands it to the next open, and a second close
    // would then close someone else's file.
    const fd = this.chunkFd;
    this.chunkFd = undefined;
    fs.closeSync(fd);
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== '')) as Partial<T>;
}

/** The datasets of one data directory. */
export class DatasetCatalog {
  readonly datasetsDir: string;
  readonly limits: DatasetLimits;

  constructor(
    readonly store: Store,
    readonly dataDir: string,
    limits: Partial<DatasetLimits> = {},
  ) {
    this.limits = { ...DEFAULT_DATASET_LIMITS, ...limits };
    this.datasetsDir = path.join(dataDir, 'datasets');
    fs.mkdirSync(this.datasetsDir, { recursive: true });
    // Staging directories of uploads a crash interrupted, and deletions it cut short, are garbage.
    for (const e of fs.readdirSync(this.datasetsDir))
      if (e.startsWith('.upload-') || e.startsWith('.deleted-'))
        fs.rmSync(path.join(this.datasetsDir, e), { recursive: true, force: true });
  }

  async beginUpload(header: UploadHeader, owner = ''): Promise<DatasetUpload> {
    if (!['pairs', 'zip', 'csv'].includes(header.format))
      throw new DatasetError(`unknown dataset format ${JSON.stringify(echo(String(header.format)))}`);
    await this.checkQuota(owner);
    return new DatasetUpload(this, header, owner);
  }

  private async checkQuota(owner: string): Promise<void> {
    const have = await this.store.countDatasets(owner);
    if (have >= this.limits.maxDatasetsPerKey)
      throw new DatasetQuotaError(
        `${owner ? `API key "${owner}"` : 'this server'} already keeps ${have} datasets (the --dataset-max-per-key limit): delete some with DeleteDataset first`,
      );
  }

  /**
   * Moves a finished staging directory into place and records the dataset. When the record cannot
   * be written (disk full, database gone), the directory is removed again: no dataset directory
   * without a record.
   */
  async register(staging: string, d: Omit<DatasetRecord, 'dir' | 'createdAt'>): Promise<DatasetRecord> {
    await this.checkQuota(d.owner);
    const dir = path.join(this.datasetsDir, d.id);
    const record: DatasetRecord = { ...d, dir, createdAt: Math.floor(Date.now() / 1000) };
    await fs.promises.rename(staging, dir);
    try {
      await this.store.insertDataset(record);
    } catch (err) {
      await fs.promises.rm(dir, { recursive: true, force: true });
      throw err;
    }
    return record;
  }

  /** Writes `pairs.tsv` into `dir` for the CSV file `file`, image paths relative to `base`; returns the row count. */
  async writeCsvReference(
    file: string,
    cols: CsvColumns,
    base: string,
    dir: string,
    what: string,
    signal?: AbortSignal,
  ): Promise<number> {
    const raw = await readCsvRows(file, cols, this.limits.maxPairs, what, signal);
    const rows = await resolveRowsInside(raw, base, this.dataDir, what);
    await writePairsFileAsync(dir, rows, PAIRS_FILE, (r) => ({ rel: path.relative(dir, r.image), caption: r.caption }));
    return rows.length;
  }

  /**
   * A training/validation file reference: a dataset id, or a CSV path inside the data directory
   * (relative to it, or absolute), which is registered as a `csv` dataset of `owner`. Paths outside
   * the data directory, directories and the server's own files (its database, jobs, models,
   * datasets) are refused.
   */
  async resolve(ref: string, owner = ''): Promise<DatasetRecord> {
    const known = await this.store.getDataset(ref);
    const shown = echo(ref);
    // Another key's dataset is as good as absent: its id tells the caller nothing. Datasets
    // without an owner (made without keys, or before datasets had owners) stay usable by id.
    if (known) {
      if (known.owner !== owner && known.owner !== '') throw new DatasetNotFoundError(`no dataset ${shown}`);
      return known;
    }
    if (/^ds-[a-z0-9]+$/.test(ref)) throw new DatasetNotFoundError(`no dataset ${shown}`);
    const abs = path.resolve(this.dataDir, ref);
    let real: string;
    try {
      real = await fs.promises.realpath(abs);
    } catch {
      if (!isInside(this.dataDir, abs)) throw new DatasetError(`dataset path ${shown} is outside the data directory`);
      throw new DatasetNotFoundError(`no dataset file ${shown} in the data directory`);
    }
    const realData = await fs.promises.realpath(this.dataDir);
    if (!isInside(realData, real)) throw new DatasetError(`dataset path ${shown} is outside the data directory`);
    const top = path.relative(realData, real).split(path.sep)[0];
    if (top === '' || OWN_ENTRIES.test(top))
      throw new DatasetError(`dataset path ${shown} is one of the server's own files, not a CSV of pairs`);
    const st = await fs.promises.stat(real);
    if (!st.isFile())
      throw new DatasetError(
        `dataset path ${shown} is not a regular file (a CSV of image paths and captions is expected)`,
      );
    if (st.size > this.limits.maxBytes)
      throw new DatasetError(
        `dataset file ${shown} is ${st.size} bytes, beyond the ${this.limits.maxBytes}-byte limit`,
      );
    await this.checkQuota(owner);
    const id = newId('ds');
    const staging = path.join(this.datasetsDir, `.upload-${id}`);
    await fs.promises.mkdir(staging, { recursive: true });
    try {
      const numPairs = await this.writeCsvReference(real, DEFAULT_COLUMNS, path.dirname(real), staging, shown);
      return await this.register(staging, {
        id,
        name: path.basename(real),
        format: 'csv',
        numPairs,
        bytes: st.size,
        owner,
      });
    } catch (err) {
      await fs.promises.rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  /** The datasets of `owner`, newest first, a page at a time. */
  async list(
    owner: string,
    pageSize: number,
    pageToken: string,
  ): Promise<{ datasets: DatasetRecord[]; nextPageToken: string }> {
    const size = pageSize === 0 ? 50 : Math.min(Math.max(1, pageSize), 500);
    let before: number | undefined;
    if (pageToken) {
      before = Number(
        Buffer.from(pageToken, 'base64url')
          .toString('utf8')
          .replace(/^ds-ord:/, ''),
      );
      if (!Number.isInteger(before) || before < 1) throw new DatasetError('page_token is not one this server issued');
    }
    const { datasets, nextOrd } = await this.store.listDatasets(owner, size, before);
    return {
      datasets,
      nextPageToken: nextOrd === undefined ? '' : Buffer.from(`ds-ord:${nextOrd}`).toString('base64url'),
    };
  }

  /**
   * Deletes a dataset of `owner` and its files. Refused while an unfinished job reads it. The
   * directory is first renamed aside (atomic), so a crash midway leaves only garbage that the next
   * start removes, never a record without files.
   */
  async delete(id: string, owner: string): Promise<DatasetRecord> {
    const d = await this.store.getDataset(id);
    if (!d || d.owner !== owner) throw new DatasetNotFoundError(`no dataset ${echo(id)}`);
    const users = await this.store.unfinishedJobsReading(id);
    if (users.length)
      throw new DatasetInUseError(
        `dataset ${id} is read by unfinished job(s) ${users.slice(0, 5).join(', ')}: cancel them or wait until they end`,
      );
    const aside = path.join(this.datasetsDir, `.deleted-${d.id}`);
    const hadDir = fs.existsSync(d.dir);
    if (hadDir) await fs.promises.rename(d.dir, aside);
    try {
      await this.store.deleteDataset(id);
    } catch (err) {
      if (hadDir) await fs.promises.rename(aside, d.dir);
      throw err;
    }
    await fs.promises.rm(aside, { recursive: true, force: true });
    return d;
  }
}

/** A key holds as many datasets as it may (RESOURCE_EXHAUSTED). */
export class DatasetQuotaError extends DatasetError {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetQuotaError';
  }
}
