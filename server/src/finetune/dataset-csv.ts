/**
 * Reading a dataset CSV without stalling the server: the file is streamed and parsed a chunk per
 * turn of the event loop (CsvParser), the row count is bounded while reading (so a 1M-row file is
 * refused at the limit, not after it was held in memory), and the "does this image path really
 * stay inside the data directory" check resolves symlinks asynchronously, once per directory (one
 * readdir tells which of its files are links) and once per file that is itself a link, instead of
 * one realpathSync per row on the main thread.
 */
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { CsvParser } from '../dataset/csv';
import { csvField, DatasetError, isInside, type CsvColumns, type DatasetRow } from './dataset-types';

/** One data row as the CSV spells it: the image reference is not resolved yet. */
export interface CsvRow {
  /** 1-based data row (the header is not counted). */
  row: number;
  file: string;
  caption: string;
}

/** Most rows named in one error message (the rest are counted). */
const LISTED_ROWS = 20;

export function rowList(rows: number[]): string {
  return `${rows.slice(0, LISTED_ROWS).join(', ')}${rows.length > LISTED_ROWS ? `, … (${rows.length} rows)` : ''}`;
}

/**
 * The data rows of a CSV file, streamed. Throws DatasetError (naming `what`) for a bad header, no
 * data rows, a parse error or more than `maxRows` rows.
 */
export async function readCsvRows(
  file: string,
  cols: CsvColumns,
  maxRows: number,
  what: string,
  signal?: AbortSignal,
): Promise<CsvRow[]> {
  let parser: CsvParser;
  try {
    parser = new CsvParser(cols.separator);
  } catch (err) {
    throw new DatasetError(`${what}: ${(err as Error).message}`);
  }
  const rows: CsvRow[] = [];
  let header: string[] | undefined;
  let imgCol = -1;
  let capCol = -1;
  const take = (records: string[][]): void => {
    for (const rec of records) {
      if (!header) {
        header = rec;
        imgCol = header.indexOf(cols.imgKey);
        capCol = header.indexOf(cols.captionKey);
        if (imgCol < 0 || capCol < 0) {
          const shown = header.join(', ');
          throw new DatasetError(
            `${what}: the header [${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}] lacks the "${cols.imgKey}" or "${cols.captionKey}" column`,
          );
        }
        continue;
      }
      if (rows.length >= maxRows)
        throw new DatasetError(`${what}: more than ${maxRows} data rows (the server's --dataset-max-pairs)`);
      rows.push({ row: rows.length + 1, file: rec[imgCol] ?? '', caption: rec[capCol] ?? '' });
    }
  };
  const stream = fs.createReadStream(file, { encoding: 'utf8', highWaterMark: 64 << 10 });
  try {
    for await (const chunk of stream) {
      if (signal?.aborted) throw new DatasetError(`${what}: cancelled`);
      take(parser.push(chunk as string));
      // One chunk per turn: whatever else the server has to do runs in between.
      await nextTurn();
    }
    take(parser.end());
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    throw new DatasetError(`${what}: ${(err as Error).message}`);
  } finally {
    stream.destroy();
  }
  if (rows.length === 0) throw new DatasetError(`${what}: no data rows (expected a header row and at least one pair)`);
  return rows;
}

/**
 * Resolves each row's image against `base` and checks it stays inside `root`, lexically and (for
 * paths that exist) after symlinks are resolved: a link inside the data directory may point
 * anywhere. Directories are resolved once each; a file only when it is a link itself.
 */
export async function resolveRowsInside(
  rows: CsvRow[],
  base: string,
  root: string,
  what: string,
): Promise<DatasetRow[]> {
  const realRoot = await realPathOr(root);
  /** Per directory named by the rows: its real path and the names in it that are symlinks (one readdir, not one lstat per row). */
  const dirs = new Map<string, Promise<{ real: string; links: Set<string> }>>();
  const dirInfo = (dir: string) => {
    let p = dirs.get(dir);
    if (!p) {
      p = (async () => {
        const real = await realPathOr(dir);
        const entries = await fs.promises.readdir(real, { withFileTypes: true }).catch(() => []);
        return { real, links: new Set(entries.filter((e) => e.isSymbolicLink()).map((e) => e.name)) };
      })();
      dirs.set(dir, p);
    }
    return p;
  };
  const out: DatasetRow[] = [];
  const outside: number[] = [];
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const image = path.resolve(base, r.file);
    out.push({ row: r.row, image, caption: r.caption });
    if (!r.file || !isInside(root, image)) {
      outside.push(r.row);
      continue;
    }
    const dir = await dirInfo(path.dirname(image));
    const name = path.basename(image);
    const real = dir.links.has(name) ? await realPathOr(path.join(dir.real, name)) : path.join(dir.real, name);
    if (!isInside(realRoot, real)) outside.push(r.row);
    if (i % 4096 === 4095) await nextTurn();
  }
  if (outside.length)
    throw new DatasetError(
      `${what}: image paths outside the data directory (or empty) in rows ${rowList(outside)}`,
      outside,
    );
  return out;
}

/** The real path of `p` (symlinks resolved) when it exists; `p` itself otherwise. */
async function realPathOr(p: string): Promise<string> {
  try {
    return await fs.promises.realpath(p);
  } catch {
    return p;
  }
}

/**
 * Writes `dir/file` (a tab-separated filepath/title file) through a temporary file and a rename,
 * streamed: `pairOf` turns each row into its line's fields as it is written (a million rows are
 * never mapped in one go), and the loop yields to the event loop between blocks.
 */
export async function writePairsFileAsync<T>(
  dir: string,
  rows: readonly T[],
  file: string,
  pairOf: (row: T) => { rel: string; caption: string },
): Promise<void> {
  const tmp = path.join(dir, `${file}.tmp`);
  const out = fs.createWriteStream(tmp);
  try {
    let buf = 'filepath\ttitle\n';
    for (let i = 0; i < rows.length; i++) {
      const p = pairOf(rows[i]);
      buf += `${csvField(p.rel)}\t${csvField(p.caption)}\n`;
      if (buf.length >= 1 << 16) {
        if (!out.write(buf))
          await once(out, 'drain'); // rejects on the stream's 'error'
        else await nextTurn();
        buf = '';
      }
    }
    out.end(buf);
    await once(out, 'finish');
  } catch (err) {
    out.destroy();
    throw err;
  }
  await fs.promises.rename(tmp, path.join(dir, file));
}
