/**
 * A zip upload turned into a dataset without trusting its layout: the central directory is read
 * first (bounded entry count; names checked: no `..`/absolute names (yauzl), no symlinks, no
 * component longer than a file name may be, no entry that is both a file and a directory), then
 * the CSV nearest the archive root is read, and only the images its rows name are extracted,
 * under names this server chooses (`images/0000001.png`), so an entry name never becomes a path
 * on disk. Every listener's work runs inside a try: a hostile archive fails the upload with
 * DatasetError naming the entry, never the process.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as yauzl from 'yauzl';
import { echo } from '../util/echo';
import { readCsvRows, rowList } from './dataset-csv';
import { DatasetError, type CsvColumns } from './dataset-types';

export interface ZipLimits {
  /** Most entries (files and directories) the archive may list. */
  maxEntries: number;
  /** Most bytes the extracted CSV and images may take together. */
  maxBytes: number;
  maxPairs: number;
}

/** The longest file-name component Linux filesystems take, in bytes. */
const NAME_MAX = 255;
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;

const entryName = (name: string): string => JSON.stringify(echo(name));

/** A pair of the dataset: the image's path relative to the dataset directory, and its caption. */
export interface ExtractedPair {
  rel: string;
  caption: string;
}

/**
 * Reads `zipFile` into `outDir` (inside the dataset's staging directory): the CSV and the images
 * it names. Returns the pairs, image paths relative to `datasetDir`, plus the bytes extracted.
 */
export async function extractZipDataset(
  zipFile: string,
  datasetDir: string,
  cols: CsvColumns,
  limits: ZipLimits,
  signal?: AbortSignal,
): Promise<{ pairs: ExtractedPair[]; bytes: number }> {
  const zip = await openZip(zipFile);
  try {
    if (zip.entryCount > limits.maxEntries)
      throw new DatasetError(
        `the archive lists ${zip.entryCount} entries, more than the server's --dataset-max-zip-entries ${limits.maxEntries}`,
      );
    const files = await indexFiles(zip);
    // The CSV nearest the archive root names the pairs.
    const csvName = [...files.keys()]
      .filter((n) => /\.(csv|tsv)$/i.test(n))
      .sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b))[0];
    if (!csvName) throw new DatasetError('the archive holds no .csv or .tsv file');
    const csvEntry = files.get(csvName)!;
    let bytes = csvEntry.uncompressedSize;
    if (bytes > limits.maxBytes)
      throw new DatasetError(`archive ${csvName}: ${bytes} bytes, beyond the ${limits.maxBytes}-byte limit`);
    const csvFile = path.join(datasetDir, 'archive.csv');
    await extractEntry(zip, csvEntry, csvFile);
    const rows = await readCsvRows(csvFile, cols, limits.maxPairs, `archive ${csvName}`, signal);
    await fs.promises.rm(csvFile, { force: true });

    // Each row's image, as an entry name (relative to the CSV's folder in the archive).
    const csvDir = path.posix.dirname(csvName);
    const outside: number[] = [];
    const missing: number[] = [];
    const chosen = new Map<string, string>(); // entry name → path relative to datasetDir
    const pairs: ExtractedPair[] = [];
    for (const r of rows) {
      const name = r.file ? path.posix.normalize(path.posix.join(csvDir, r.file.replace(/\\/g, '/'))) : '';
      if (
        !name ||
        name === '..' ||
        name.startsWith('../') ||
        path.posix.isAbsolute(r.file) ||
        /^[a-z][a-z0-9+.-]*:/i.test(r.file)
      ) {
        outside.push(r.row);
        continue;
      }
      const entry = files.get(name);
      if (!entry) {
        missing.push(r.row);
        continue;
      }
      let rel = chosen.get(name);
      if (rel === undefined) {
        const ext = /\.[A-Za-z0-9]{1,8}$/.exec(name)?.[0].toLowerCase() ?? '';
        rel = path.join('images', `${String(chosen.size + 1).padStart(7, '0')}${ext}`);
        chosen.set(name, rel);
        bytes += entry.uncompressedSize;
        if (bytes > limits.maxBytes)
          throw new DatasetError(
            `the images the CSV names expand beyond the ${limits.maxBytes}-byte limit (the server's --dataset-max-bytes)`,
          );
      }
      pairs.push({ rel, caption: r.caption });
    }
    if (outside.length)
      throw new DatasetError(
        `archive ${csvName}: image paths outside the archive (or empty) in rows ${rowList(outside)}`,
        outside,
      );
    if (missing.length)
      throw new DatasetError(`archive ${csvName}: images not in the archive in rows ${rowList(missing)}`, missing);

    await fs.promises.mkdir(path.join(datasetDir, 'images'), { recursive: true });
    for (const [name, rel] of chosen) {
      if (signal?.aborted) throw new DatasetError('upload cancelled');
      await extractEntry(zip, files.get(name)!, path.join(datasetDir, rel));
    }
    return { pairs, bytes };
  } finally {
    zip.close();
  }
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    // autoClose off: entries are opened after the listing is complete; the caller closes.
    yauzl.open(
      file,
      { lazyEntries: true, autoClose: false, strictFileNames: false, validateEntrySizes: true },
      (err, zip) => {
        if (err || !zip)
          reject(new DatasetError(`not a readable zip archive: ${echo(err?.message ?? 'unknown error')}`));
        else resolve(zip);
      },
    );
  });
}

/**
 * The archive's file entries by (normalised) name, after checking every entry. Throws DatasetError
 * naming the first bad entry.
 */
function indexFiles(zip: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const files = new Map<string, yauzl.Entry>();
    const dirs = new Set<string>();
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      reject(err instanceof DatasetError ? err : new DatasetError(`bad archive: ${echo((err as Error).message)}`));
    };
    zip.on('error', fail);
    zip.on('entry', (entry: yauzl.Entry) => {
      try {
        if (settled) return;
        addEntry(entry, files, dirs);
        zip.readEntry();
      } catch (err) {
        fail(err);
      }
    });
    zip.on('end', () => {
      try {
        // A name used both as a file and as a folder (`a`, then `a/b.png` or `a/`) cannot be laid
        // out on any filesystem: the archive is inconsistent.
        for (const name of files.keys())
          if (dirs.has(name)) throw new DatasetError(`archive entry ${entryName(name)} is both a file and a directory`);
        if (!settled) {
          settled = true;
          resolve(files);
        }
      } catch (err) {
        fail(err);
      }
    });
    zip.readEntry();
  });
}

function addEntry(entry: yauzl.Entry, files: Map<string, yauzl.Entry>, dirs: Set<string>): void {
  const raw = entry.fileName;
  const isDirName = raw.endsWith('/');
  const name = path.posix.normalize(raw).replace(/\/+$/, '');
  if (name === '' || name === '.') return; // the archive root itself
  for (const part of name.split('/')) {
    if (Buffer.byteLength(part) > NAME_MAX)
      throw new DatasetError(`archive entry ${entryName(raw)} has a name component longer than ${NAME_MAX} bytes`);
  }
  // Unix "made by" (high byte 3): the upper 16 bits of the external attributes are the st_mode.
  const mode = entry.versionMadeBy >> 8 === 3 ? (entry.externalFileAttributes >>> 16) & S_IFMT : 0;
  if (mode === S_IFLNK)
    throw new DatasetError(`archive entry ${entryName(raw)} is a symbolic link (links are not accepted)`);
  const parts = name.split('/');
  for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  if (isDirName || mode === S_IFDIR) {
    dirs.add(name);
    return;
  }
  if (files.has(name)) throw new DatasetError(`archive entry ${entryName(raw)} appears twice`);
  files.set(name, entry);
}

/** Streams one entry's bytes to `dest` (a new file); yauzl checks the size against the directory. */
async function extractEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, dest: string): Promise<void> {
  const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) => {
    zip.openReadStream(entry, (err, s) => {
      if (err || !s)
        reject(
          new DatasetError(`archive entry ${entryName(entry.fileName)}: ${echo(err?.message ?? 'cannot be read')}`),
        );
      else resolve(s);
    });
  });
  try {
    await pipeline(stream, fs.createWriteStream(dest, { flags: 'wx' }));
  } catch (err) {
    // The system's own failures (ENOSPC, EIO) are the server's, not the archive's.
    if (/^E[A-Z]+$/.test(String((err as NodeJS.ErrnoException).code ?? ''))) throw err;
    throw new DatasetError(`archive entry ${entryName(entry.fileName)}: ${echo((err as Error).message)}`);
  }
}
