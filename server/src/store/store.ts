/**
 * The fine-tune catalogue: datasets, jobs, job events and model versions in one SQLite database
 * (better-sqlite3, WAL mode) inside the data directory; artifacts live on disk beside it. Every
 * write is one transaction, so a process killed at any moment leaves a consistent database that
 * the next start reads back (see FineTuneJobRunner.recover for what happens to running jobs).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';

export const DB_FILE = 'clipserve.db';

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

export type JobState = 'queued' | 'validating_files' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['queued', 'validating_files', 'running', 'succeeded', 'failed', 'cancelled'];
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

export type DatasetFormat = 'pairs' | 'zip' | 'csv';

export interface DatasetRecord {
  id: string;
  name: string;
  format: DatasetFormat;
  /** Absolute directory holding pairs.tsv and the images. */
  dir: string;
  numPairs: number;
  bytes: number;
  createdAt: number;
  /** The API key name that created it ('' when the server runs without keys). */
  owner: string;
}

export interface JobErrorInfo {
  code: string;
  message: string;
  rows?: number[];
}

export interface JobRecord {
  id: string;
  method: string;
  baseModel: string;
  trainingFile: string;
  validationFile: string;
  hyperparameters: Record<string, unknown>;
  suffix: string;
  state: JobState;
  fineTunedModel: string;
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  error: JobErrorInfo | undefined;
  metricsBefore: Record<string, number>;
  metricsAfter: Record<string, number>;
  step: number;
  totalSteps: number;
  /** The server instance working on the job (`<host>/<boot id>`), empty when none. */
  owner: string;
  /** When the owner last confirmed it is still working on the job (Unix ms). */
  heartbeatMs: number;
  /** Set by a cancel that reached another instance than the owner; the owner acts on it. */
  cancelRequested: boolean;
}

export interface JobEventRecord {
  jobId: string;
  sequence: number;
  type: string;
  createdAtMs: number;
  message: string;
  data: Record<string, unknown>;
}

export interface ModelVersionRecord {
  version: string;
  name: string;
  bundleDir: string;
  parentVersion: string;
  jobId: string;
  createdAt: number;
  metrics: Record<string, number>;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS datasets (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, dir TEXT NOT NULL,
  num_pairs INTEGER NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, ord INTEGER NOT NULL UNIQUE, method TEXT NOT NULL, base_model TEXT NOT NULL,
  training_file TEXT NOT NULL, validation_file TEXT NOT NULL, hyperparameters TEXT NOT NULL,
  suffix TEXT NOT NULL, state TEXT NOT NULL, fine_tuned_model TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL, started_at INTEGER NOT NULL DEFAULT 0, finished_at INTEGER NOT NULL DEFAULT 0,
  error TEXT, metrics_before TEXT NOT NULL DEFAULT '{}', metrics_after TEXT NOT NULL DEFAULT '{}',
  step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0,
  owner TEXT NOT NULL DEFAULT '', heartbeat_ms INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS job_events (
  job_id TEXT NOT NULL REFERENCES jobs(id), seq INTEGER NOT NULL, type TEXT NOT NULL,
  created_at_ms INTEGER NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS model_versions (
  version TEXT PRIMARY KEY, name TEXT NOT NULL, bundle_dir TEXT NOT NULL, parent_version TEXT NOT NULL,
  job_id TEXT NOT NULL, created_at INTEGER NOT NULL, metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

interface JobRow {
  id: string; method: string; base_model: string; training_file: string; validation_file: string;
  hyperparameters: string; suffix: string; state: string; fine_tuned_model: string; created_at: number;
  started_at: number; finished_at: number; error: string | null; metrics_before: string; metrics_after: string;
  step: number; total_steps: number; owner: string; heartbeat_ms: number; cancel_requested: number;
}

function jobFromRow(r: JobRow): JobRecord {
  return {
    id: r.id,
    method: r.method,
    baseModel: r.base_model,
    trainingFile: r.training_file,
    validationFile: r.validation_file,
    hyperparameters: JSON.parse(r.hyperparameters),
    suffix: r.suffix,
    state: r.state as JobState,
    fineTunedModel: r.fine_tuned_model,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    error: r.error ? (JSON.parse(r.error) as JobErrorInfo) : undefined,
    metricsBefore: JSON.parse(r.metrics_before),
    metricsAfter: JSON.parse(r.metrics_after),
    step: r.step,
    totalSteps: r.total_steps,
    owner: r.owner,
    heartbeatMs: r.heartbeat_ms,
    cancelRequested: r.cancel_requested !== 0,
  };
}

export interface JobUpdate {
  state?: JobState;
  fineTunedModel?: string;
  startedAt?: number;
  finishedAt?: number;
  error?: JobErrorInfo | null;
  metricsBefore?: Record<string, number>;
  metricsAfter?: Record<string, number>;
  step?: number;
  totalSteps?: number;
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

export class Store {
  readonly db: Database.Database;
  readonly dataDir: string;

  private constructor(dataDir: string) {
    this.dataDir = dataDir;
    fs.mkdirSync(dataDir, { recursive: true });
    try {
      this.db = new Database(path.join(dataDir, DB_FILE));
    } catch (err) {
      throw new StoreError(`cannot open ${path.join(dataDir, DB_FILE)}: ${(err as Error).message}`);
    }
    // WAL: readers never block the writer; synchronous=NORMAL is durable against process crashes
    // (a commit is in the WAL before the call returns), which is what a restart needs.
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.migrate();
  }

  /** Columns added after the first schema (databases created by earlier builds). */
  private migrate(): void {
    const have = new Set((this.db.prepare('PRAGMA table_info(jobs)').all() as { name: string }[]).map((c) => c.name));
    const add: [string, string][] = [
      ['owner', `TEXT NOT NULL DEFAULT ''`],
      ['heartbeat_ms', 'INTEGER NOT NULL DEFAULT 0'],
      ['cancel_requested', 'INTEGER NOT NULL DEFAULT 0'],
    ];
    for (const [col, decl] of add) if (!have.has(col)) this.db.exec(`ALTER TABLE jobs ADD COLUMN ${col} ${decl}`);
    const dsCols = new Set((this.db.prepare('PRAGMA table_info(datasets)').all() as { name: string }[]).map((c) => c.name));
    if (!dsCols.has('owner')) this.db.exec(`ALTER TABLE datasets ADD COLUMN owner TEXT NOT NULL DEFAULT ''`);
  }

  static open(dataDir: string): Store {
    return new Store(path.resolve(dataDir));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  integrityCheck(): string {
    return String(this.db.pragma('integrity_check', { simple: true }));
  }

  // -- datasets ------------------------------------------------------------------------------

  insertDataset(d: DatasetRecord): void {
    this.db
      .prepare('INSERT INTO datasets (id, name, format, dir, num_pairs, bytes, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(d.id, d.name, d.format, d.dir, d.numPairs, d.bytes, d.createdAt, d.owner);
  }

  getDataset(id: string): DatasetRecord | undefined {
    const r = this.db.prepare('SELECT * FROM datasets WHERE id = ?').get(id) as DatasetRow | undefined;
    return r && datasetFromRow(r);
  }

  /** `owner`'s datasets, newest first; `beforeOrd` is the page cursor (exclusive). */
  listDatasets(owner: string, limit: number, beforeOrd?: number): { datasets: DatasetRecord[]; nextOrd: number | undefined } {
    const rows = this.db
      .prepare('SELECT *, rowid AS ord FROM datasets WHERE owner = ? AND rowid < ? ORDER BY rowid DESC LIMIT ?')
      .all(owner, beforeOrd ?? Number.MAX_SAFE_INTEGER, limit + 1) as (DatasetRow & { ord: number })[];
    const page = rows.slice(0, limit);
    return { datasets: page.map(datasetFromRow), nextOrd: rows.length > limit ? page[page.length - 1].ord : undefined };
  }

  countDatasets(owner: string): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM datasets WHERE owner = ?').get(owner) as { n: number }).n;
  }

  deleteDataset(id: string): boolean {
    return this.db.prepare('DELETE FROM datasets WHERE id = ?').run(id).changes === 1;
  }

  /** Ids of the jobs not yet finished that read dataset `id` (training or validation file). */
  unfinishedJobsReading(id: string): string[] {
    const rows = this.db
      .prepare(`SELECT id FROM jobs WHERE (training_file = ? OR validation_file = ?) AND state NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY ord`)
      .all(id, id) as { id: string }[];
    return rows.map((r) => r.id);
  }

  // -- jobs ----------------------------------------------------------------------------------

  insertJob(j: Omit<JobRecord, 'state' | 'fineTunedModel' | 'startedAt' | 'finishedAt' | 'error' | 'metricsBefore' | 'metricsAfter' | 'step' | 'totalSteps' | 'createdAt' | 'owner' | 'heartbeatMs' | 'cancelRequested'>): JobRecord {
    const tx = this.db.transaction(() => {
      const ord = ((this.db.prepare('SELECT MAX(ord) AS m FROM jobs').get() as { m: number | null }).m ?? 0) + 1;
      this.db
        .prepare(
          `INSERT INTO jobs (id, ord, method, base_model, training_file, validation_file, hyperparameters, suffix, state, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)`,
        )
        .run(j.id, ord, j.method, j.baseModel, j.trainingFile, j.validationFile, JSON.stringify(j.hyperparameters), j.suffix, nowSeconds());
    });
    tx();
    return this.getJob(j.id)!;
  }

  getJob(id: string): JobRecord | undefined {
    const r = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return r && jobFromRow(r);
  }

  /** Newest first; `beforeOrd` is the page cursor (exclusive). */
  listJobs(limit: number, beforeOrd?: number): { jobs: JobRecord[]; nextOrd: number | undefined } {
    const rows = this.db
      .prepare('SELECT *, ord FROM jobs WHERE ord < ? ORDER BY ord DESC LIMIT ?')
      .all(beforeOrd ?? Number.MAX_SAFE_INTEGER, limit + 1) as (JobRow & { ord: number })[];
    const page = rows.slice(0, limit);
    return { jobs: page.map(jobFromRow), nextOrd: rows.length > limit ? page[page.length - 1].ord : undefined };
  }

  jobsInStates(states: readonly JobState[]): JobRecord[] {
    const rows = this.db
      .prepare(`SELECT * FROM jobs WHERE state IN (${states.map(() => '?').join(', ')}) ORDER BY ord ASC`)
      .all(...states) as JobRow[];
    return rows.map(jobFromRow);
  }

  /**
   * Takes a queued job for `owner`: one conditional UPDATE, so when several server instances share
   * the data directory exactly one of them wins each job.
   */
  claimJob(id: string, owner: string): boolean {
    return this.db.prepare(`UPDATE jobs SET owner = ?, heartbeat_ms = ? WHERE id = ? AND state = 'queued' AND owner = ''`).run(owner, Date.now(), id).changes === 1;
  }

  /** Records that `owner` still works on the job; false when it no longer owns it. */
  heartbeat(id: string, owner: string): boolean {
    return this.db.prepare('UPDATE jobs SET heartbeat_ms = ? WHERE id = ? AND owner = ?').run(Date.now(), id, owner).changes === 1;
  }

  releaseJob(id: string): void {
    this.db.prepare(`UPDATE jobs SET owner = '', heartbeat_ms = 0 WHERE id = ?`).run(id);
  }

  /** Cancels a job nobody has claimed yet; false when it was claimed (or finished) meanwhile. */
  cancelQueued(id: string): boolean {
    return this.db.prepare(`UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'queued' AND owner = ''`).run(Math.floor(Date.now() / 1000), id).changes === 1;
  }

  requestCancel(id: string): void {
    this.db.prepare('UPDATE jobs SET cancel_requested = 1 WHERE id = ?').run(id);
  }

  jobCountsByState(): Record<string, number> {
    const counts: Record<string, number> = Object.fromEntries(JOB_STATES.map((s) => [s, 0]));
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all() as { state: string; n: number }[]) counts[r.state] = r.n;
    return counts;
  }

  updateJob(id: string, u: JobUpdate): JobRecord {
    const sets: string[] = [];
    const values: unknown[] = [];
    const put = (col: string, v: unknown) => {
      sets.push(`${col} = ?`);
      values.push(v);
    };
    if (u.state !== undefined) put('state', u.state);
    if (u.fineTunedModel !== undefined) put('fine_tuned_model', u.fineTunedModel);
    if (u.startedAt !== undefined) put('started_at', u.startedAt);
    if (u.finishedAt !== undefined) put('finished_at', u.finishedAt);
    if (u.error !== undefined) put('error', u.error === null ? null : JSON.stringify(u.error));
    if (u.metricsBefore !== undefined) put('metrics_before', JSON.stringify(u.metricsBefore));
    if (u.metricsAfter !== undefined) put('metrics_after', JSON.stringify(u.metricsAfter));
    if (u.step !== undefined) put('step', u.step);
    if (u.totalSteps !== undefined) put('total_steps', u.totalSteps);
    if (sets.length > 0) {
      const info = this.db.prepare(`UPDATE jobs SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
      if (info.changes !== 1) throw new StoreError(`no job ${id}`);
    }
    return this.getJob(id)!;
  }

  // -- events --------------------------------------------------------------------------------

  /** Appends an event (next sequence number of the job) and applies `update` in the same transaction. */
  appendEvent(jobId: string, type: string, message: string, data: Record<string, unknown>, update?: JobUpdate): JobEventRecord {
    const createdAtMs = Date.now();
    let sequence = 0;
    this.db.transaction(() => {
      sequence = ((this.db.prepare('SELECT MAX(seq) AS m FROM job_events WHERE job_id = ?').get(jobId) as { m: number | null }).m ?? 0) + 1;
      this.db
        .prepare('INSERT INTO job_events (job_id, seq, type, created_at_ms, message, data) VALUES (?, ?, ?, ?, ?, ?)')
        .run(jobId, sequence, type, createdAtMs, message, JSON.stringify(data));
      if (update) this.updateJob(jobId, update);
    })();
    return { jobId, sequence, type, createdAtMs, message, data };
  }

  /** Events after `afterSequence`, in order; at most `limit` of them (a page) when given. */
  events(jobId: string, afterSequence = 0, limit = -1): JobEventRecord[] {
    const rows = this.db
      .prepare('SELECT * FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?')
      .all(jobId, afterSequence, limit) as EventRow[];
    return rows.map(eventFromRow);
  }

  /** The last `state` event at or before `sequence` (what the job's state was then). */
  stateEventAt(jobId: string, sequence: number): JobEventRecord | undefined {
    const r = this.db.prepare(`SELECT * FROM job_events WHERE job_id = ? AND seq <= ? AND type = 'state' ORDER BY seq DESC LIMIT 1`).get(jobId, sequence) as EventRow | undefined;
    return r && eventFromRow(r);
  }

  // -- model versions ------------------------------------------------------------------------

  upsertModelVersion(v: ModelVersionRecord): void {
    this.db
      .prepare(
        `INSERT INTO model_versions (version, name, bundle_dir, parent_version, job_id, created_at, metrics) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(version) DO UPDATE SET name = excluded.name, bundle_dir = excluded.bundle_dir`,
      )
      .run(v.version, v.name, v.bundleDir, v.parentVersion, v.jobId, v.createdAt, JSON.stringify(v.metrics));
  }

  getModelVersion(version: string): ModelVersionRecord | undefined {
    const r = this.db.prepare('SELECT * FROM model_versions WHERE version = ?').get(version) as ModelVersionRow | undefined;
    return r && modelVersionFromRow(r);
  }

  listModelVersions(): ModelVersionRecord[] {
    const rows = this.db.prepare('SELECT * FROM model_versions ORDER BY created_at DESC, rowid DESC').all() as ModelVersionRow[];
    return rows.map(modelVersionFromRow);
  }

  getSetting(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setSetting(key: string, value: string): void {
    this.db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }
}

interface EventRow {
  job_id: string;
  seq: number;
  type: string;
  created_at_ms: number;
  message: string;
  data: string;
}

function eventFromRow(r: EventRow): JobEventRecord {
  return { jobId: r.job_id, sequence: r.seq, type: r.type, createdAtMs: r.created_at_ms, message: r.message, data: JSON.parse(r.data) };
}

interface DatasetRow {
  id: string;
  name: string;
  format: string;
  dir: string;
  num_pairs: number;
  bytes: number;
  created_at: number;
  owner: string;
}

function datasetFromRow(r: DatasetRow): DatasetRecord {
  return { id: r.id, name: r.name, format: r.format as DatasetFormat, dir: r.dir, numPairs: r.num_pairs, bytes: r.bytes, createdAt: r.created_at, owner: r.owner };
}

interface ModelVersionRow {
  version: string;
  name: string;
  bundle_dir: string;
  parent_version: string;
  job_id: string;
  created_at: number;
  metrics: string;
}

function modelVersionFromRow(r: ModelVersionRow): ModelVersionRecord {
  return { version: r.version, name: r.name, bundleDir: r.bundle_dir, parentVersion: r.parent_version, jobId: r.job_id, createdAt: r.created_at, metrics: JSON.parse(r.metrics) };
}
