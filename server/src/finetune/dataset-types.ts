/**
 * The types and small helpers every dataset module shares (errors, columns, rows, the "inside the
 * data directory" test), apart from dataset.ts so the readers it uses can import them without a cycle.
 */
import * as path from 'node:path';
import { csvField, DEFAULT_CSV_COLUMNS, type CsvColumns } from '../dataset/csv';

export class DatasetError extends Error {
  constructor(
    message: string,
    readonly rows: number[] = [],
  ) {
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

/** A dataset that unfinished jobs still read (FAILED_PRECONDITION). */
export class DatasetInUseError extends DatasetError {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetInUseError';
  }
}

export type { CsvColumns };
export const DEFAULT_COLUMNS: CsvColumns = DEFAULT_CSV_COLUMNS;

export interface DatasetRow {
  /** 1-based data row (the header is not counted). */
  row: number;
  /** Absolute image path. */
  image: string;
  caption: string;
}

/** True when `p` (absolute, normalised) lies inside `root`. */
export function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** A field of the tab-separated pairs file (the CSV format's own quoting, dataset/csv.ts). */
export { csvField };
