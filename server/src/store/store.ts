/**
 * The fine-tune catalogue's contract: datasets, jobs, job events, model versions and settings, as
 * one asynchronous interface with two implementations of identical behaviour (sql-store.ts over
 * Kysely): SQLite embedded in the data directory for one host (sqlite-store.ts), PostgreSQL when
 * replicas share state (postgres-store.ts). Every write is one transaction, so a process killed at
 * any moment leaves a consistent database. Writes that other instances must hear about (a job
 * queued, an event appended, a cancel requested, a setting changed) also raise a StoreNotification:
 * through LISTEN/NOTIFY on PostgreSQL (every process), inside this process only on SQLite
 * (`sharedNotifications` false: pollers keep polling).
 */

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

export type JobState = 'queued' | 'validating_files' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = [
  'queued',
  'validating_files',
  'running',
  'succeeded',
  'failed',
  'cancelled',
];
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

/** The columns a new job is created with; the rest start at their defaults. */
export type NewJob = Pick<
  JobRecord,
  'id' | 'method' | 'baseModel' | 'trainingFile' | 'validationFile' | 'hyperparameters' | 'suffix'
>;

export interface NewEvent {
  type: string;
  message: string;
  data: Record<string, unknown>;
}

/** What changed, as other instances hear it (kept small: a NOTIFY payload is limited to 8000 bytes). */
export type StoreNotification =
  | { kind: 'job_queued'; jobId: string }
  | { kind: 'job_event'; jobId: string; sequence: number }
  | { kind: 'cancel_requested'; jobId: string }
  | { kind: 'setting'; key: string }
  /** Notifications may have been missed (the listening connection was re-established): re-read. */
  | { kind: 'resync' };

export type StoreBackend = 'sqlite' | 'postgres';

export interface Store {
  readonly backend: StoreBackend;
  /** The data directory: artifacts (datasets, job work dirs, bundles) live there as files. */
  readonly dataDir: string;
  /** True when notifications reach every process sharing the database, not only this one. */
  readonly sharedNotifications: boolean;
  close(): Promise<void>;
  /** Listens to notifications (this process's own writes included); returns the unsubscribe function. */
  onNotification(listener: (n: StoreNotification) => void): () => void;

  insertDataset(d: DatasetRecord): Promise<void>;
  getDataset(id: string): Promise<DatasetRecord | undefined>;
  /** `owner`'s datasets, newest first; `beforeOrd` is the page cursor (exclusive). */
  listDatasets(
    owner: string,
    limit: number,
    beforeOrd?: number,
  ): Promise<{ datasets: DatasetRecord[]; nextOrd: number | undefined }>;
  countDatasets(owner: string): Promise<number>;
  /** False when there was no such dataset. */
  deleteDataset(id: string): Promise<boolean>;
  /** Ids of the jobs not yet finished that read dataset `id` (training or validation file). */
  unfinishedJobsReading(id: string): Promise<string[]>;

  /**
   * Creates a queued job with its first event (sequence 1) in one transaction, so that no other
   * instance can claim the job and write before it; notifies `job_queued`.
   */
  insertJob(j: NewJob, firstEvent: NewEvent): Promise<JobRecord>;
  getJob(id: string): Promise<JobRecord | undefined>;
  /** Newest first; `beforeOrd` is the page cursor (exclusive). */
  listJobs(limit: number, beforeOrd?: number): Promise<{ jobs: JobRecord[]; nextOrd: number | undefined }>;
  /** Oldest first. */
  jobsInStates(states: readonly JobState[]): Promise<JobRecord[]>;
  /**
   * Takes the oldest queued job nobody owns for `owner`, or undefined when there is none. Exactly
   * one caller wins each job however many instances ask at once.
   */
  claimNextJob(owner: string): Promise<JobRecord | undefined>;
  /** Records that `owner` still works on the job; false when it no longer owns it. */
  heartbeat(id: string, owner: string): Promise<boolean>;
  /**
   * Takes over a job from an owner presumed gone: succeeds only while the job still has that owner
   * and that last heartbeat (a live owner heartbeats in between), so of several instances
   * recovering the same job exactly one wins.
   */
  adoptJob(id: string, fromOwner: string, seenHeartbeatMs: number, owner: string): Promise<boolean>;
  /** Drops the job's owner (a pending cancel request stays); notifies `job_queued` when it is queued. */
  releaseJob(id: string): Promise<void>;
  /**
   * Cancels a job nobody has claimed yet, writing its terminal `event` in the same transaction (a
   * watcher never sees a cancelled job without its last event); undefined when it was claimed (or
   * finished) meanwhile.
   */
  cancelQueued(id: string, event: NewEvent): Promise<JobEventRecord | undefined>;
  /** Asks the job's owner to cancel it; notifies `cancel_requested`. */
  requestCancel(id: string): Promise<void>;
  jobCountsByState(): Promise<Record<string, number>>;
  updateJob(id: string, u: JobUpdate): Promise<JobRecord>;

  /**
   * Appends an event (the job's next sequence number) and applies `update` in the same
   * transaction; notifies `job_event`. Throws StoreError for a job that does not exist.
   */
  appendEvent(
    jobId: string,
    type: string,
    message: string,
    data: Record<string, unknown>,
    update?: JobUpdate,
  ): Promise<JobEventRecord>;
  /**
   * Appends several events in order in one transaction (consecutive sequence numbers), applying
   * their updates in order; notifies one `job_event` with the last sequence. A writer that falls
   * behind a fast producer (a trainer's step events) catches up by writing its backlog at once.
   */
  appendEvents(jobId: string, events: readonly (NewEvent & { update?: JobUpdate })[]): Promise<JobEventRecord[]>;
  /** Events after `afterSequence`, in order; at most `limit` of them (a page) when given. */
  events(jobId: string, afterSequence?: number, limit?: number): Promise<JobEventRecord[]>;
  /** The last `state` event at or before `sequence` (what the job's state was then). */
  stateEventAt(jobId: string, sequence: number): Promise<JobEventRecord | undefined>;

  /** Inserts a version, or for a known one updates its name and bundle directory. */
  upsertModelVersion(v: ModelVersionRecord): Promise<void>;
  getModelVersion(version: string): Promise<ModelVersionRecord | undefined>;
  /** Newest first. */
  listModelVersions(): Promise<ModelVersionRecord[]>;

  getSetting(key: string): Promise<string | undefined>;
  /** Sets a setting and notifies `setting`. */
  setSetting(key: string, value: string): Promise<void>;
}
