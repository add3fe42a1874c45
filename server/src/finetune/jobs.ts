/**
 * Fine-tune jobs: creation (checks that fail fast: method, hyperparameters, dataset reference,
 * base model), a queue that runs one job at a time in creation order through the states
 * queued → validating_files → running → succeeded | failed | cancelled, events persisted with
 * every state change and fanned out to watchers, cancellation, and recovery after a restart.
 *
 * Several server instances may share one store (replicas on PostgreSQL, or processes of one host
 * on SQLite): a job is claimed by exactly one of them (claimNextJob), its owner heartbeats while it
 * works, a cancel that reaches another instance is passed on through the database (a notification
 * wakes the owner; the heartbeat tick re-reads it in case one is lost), new jobs wake idle
 * instances the same way, and a job whose owner stopped heartbeating (or an owner on this host
 * from before a restart) is adopted by exactly one instance and resumed.
 *
 * Isolation: every job works in its own directory `<data dir>/jobs/<id>/` (its dataset view,
 * features, checkpoints, output bundle); datasets are read-only once uploaded; the output bundle
 * is moved under `<data dir>/models/<version>` with a version name unique to the job.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from 'pino';
import type { ModelRegistry } from '../versions/registry';
import {
  TERMINAL_STATES,
  type JobErrorInfo,
  type JobEventRecord,
  type JobRecord,
  type JobState,
  type JobUpdate,
  type Store,
  type StoreNotification,
} from '../store/store';
import { echo } from '../util/echo';
import { resolveConfig } from '../model/config';
import { PreprocessPool } from '../preprocess';
import type { ImageLimits } from '../preprocess/errors';
import {
  DatasetError,
  PAIRS_FILE,
  readDatasetRows,
  VALIDATION_FILE,
  validateDatasetRows,
  writePairsFile,
  type DatasetCatalog,
  type DatasetRow,
} from './dataset';
import {
  FineTuneCancelledError,
  FineTuneDataError,
  FineTuneValidationError,
  METHOD_NAMES,
  SHUTDOWN_ABORT_REASON,
  type FineTuneMethod,
  type FineTuneMethodEvent,
  type Hyperparameters,
} from './method';

export class JobNotFoundError extends Error {
  constructor(readonly jobId: string) {
    super(`no fine-tune job ${JSON.stringify(echo(jobId))}`);
    this.name = 'JobNotFoundError';
  }
}

/** The job's state forbids the operation (e.g. cancelling a finished job). */
export class JobStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JobStateError';
  }
}

export interface CreateJobRequest {
  trainingFile: string;
  validationFile?: string;
  method?: string;
  baseModel?: string;
  hyperparameters?: Hyperparameters;
  suffix?: string;
  /** The API key name creating the job: CSV paths become datasets it owns; others' datasets are not found. */
  owner?: string;
}

/**
 * Wakes a watcher: a new event of the job exists up to `sequence`. `event` is the record itself when
 * this process wrote it; a notification from another instance carries only the number (read the
 * store). After a lost notification connection `sequence` is Infinity: re-read.
 */
export type JobListener = (wake: { sequence: number; event?: JobEventRecord }) => void;

export interface FineTuneJobRunnerOptions {
  store: Store;
  catalog: DatasetCatalog;
  registry: ModelRegistry;
  dataDir: string;
  methods: FineTuneMethod[];
  /** The version new jobs fine-tune when they name none. */
  activeVersion: () => string;
  logger: Logger;
  /** Methods whose jobs can resume after a restart (default both: the adapter from its epoch
   *  checkpoint, full by adopting its still-running Kubernetes Job); the rest are failed with the reason. */
  resumable?: ReadonlySet<string>;
  /** How long cancel waits for a running job to stop. */
  cancelWaitMs?: number;
  /** This instance's host name (default os.hostname()): owners on the same host are previous lives. */
  hostname?: string;
  /** Heartbeat period of the running job and queue poll period (default 2 s). */
  heartbeatMs?: number;
  /** A job whose owner has not heartbeated for this long is recovered by another instance (default 60 s). */
  staleMs?: number;
  /** The serving decoder's limits, applied when validating training images (default DEFAULT_IMAGE_LIMITS). */
  imageLimits?: ImageLimits;
}

const SUFFIX = /^[a-z0-9-]{0,40}$/;
const RESUMABLE: ReadonlySet<string> = new Set(['adapter', 'full']);
const nowSeconds = (): number => Math.floor(Date.now() / 1000);
/** Sorted list of the rows in a message, kept short. */
const rowList = (rows: number[]): string =>
  rows.slice(0, 20).join(', ') + (rows.length > 20 ? `, … (${rows.length} rows)` : '');

interface ActiveJob {
  id: string;
  controller: AbortController;
  reason: 'cancel' | 'shutdown' | 'storage' | undefined;
  /** Why recording the job's progress failed (e.g. SQLITE_FULL): the job is stopped and failed. */
  storageError?: unknown;
  done: Promise<void>;
}

interface PendingEvent {
  type: string;
  message: string;
  data: Record<string, unknown>;
  update?: JobUpdate;
  resolve: (rec: JobEventRecord) => void;
  reject: (err: unknown) => void;
}

interface Outbox {
  pending: PendingEvent[];
  /** Settles when everything raised so far is written (or failed). */
  drained: Promise<void>;
}

/** Most events written in one transaction. */
const MAX_EVENT_BATCH = 500;
/**
 * Least time between two writes of one job's events: a trainer reporting thousands of steps a
 * second gets them written a few dozen per transaction instead of one each (which would keep the
 * event loop busy writing), at the price of being that much later in the store.
 */
const EVENT_WRITE_INTERVAL_MS = 25;

export class FineTuneJobRunner {
  private readonly methods = new Map<string, FineTuneMethod>();
  private readonly listeners = new Map<string, Set<JobListener>>();
  /** Per job, the events raised and not yet written: written in order, a backlog in one transaction. */
  private readonly outbox = new Map<string, Outbox>();
  /** When each job's events were last written (EVENT_WRITE_INTERVAL_MS). */
  private readonly lastEventWrite = new Map<string, number>();
  private active: ActiveJob | undefined;
  private pumping = false;
  /** A kick arrived while the queue was being read: read it again before stopping. */
  private kicked = false;
  private ticking = false;
  private closed = false;
  private started = false;
  private timer: NodeJS.Timeout | undefined;
  private unlisten: () => void = () => undefined;
  private readonly hostname: string;
  /** This process's owner id: host name and a random boot id. */
  readonly owner: string;

  constructor(private readonly o: FineTuneJobRunnerOptions) {
    for (const m of o.methods) this.methods.set(m.name, m);
    this.hostname = o.hostname ?? os.hostname();
    this.owner = `${this.hostname}/${randomBytes(6).toString('hex')}`;
  }

  // -- public API ------------------------------------------------------------------------------

  /** True when the store's notifications reach every instance (watchers then need little polling). */
  get sharedNotifications(): boolean {
    return this.o.store.sharedNotifications;
  }

  async create(req: CreateJobRequest): Promise<JobRecord> {
    const methodName = req.method || 'adapter';
    if (!(METHOD_NAMES as readonly string[]).includes(methodName))
      throw new FineTuneValidationError(
        `unknown method ${JSON.stringify(methodName)} (expected ${METHOD_NAMES.join(' or ')})`,
      );
    const method = this.methods.get(methodName);
    if (!method) throw new FineTuneValidationError(`method "${methodName}" is not available on this server`);
    const hp = req.hyperparameters ?? {};
    method.validate(hp);
    const suffix = req.suffix ?? '';
    if (!SUFFIX.test(suffix))
      throw new FineTuneValidationError(
        `suffix must be at most 40 characters of a-z, 0-9 and "-", got ${JSON.stringify(suffix)}`,
      );
    if (!req.trainingFile)
      throw new FineTuneValidationError(
        'training_file is required (a dataset id or a CSV path inside the data directory)',
      );
    const owner = req.owner ?? '';
    const training = await this.o.catalog.resolve(req.trainingFile, owner);
    const validation = req.validationFile ? await this.o.catalog.resolve(req.validationFile, owner) : undefined;
    const baseModel = req.baseModel || this.o.activeVersion();
    const base = await this.o.registry.get(baseModel); // ModelNotFoundError for an unknown version
    method.checkJob?.({
      hyperparameters: hp,
      baseModel: { version: base.version, bundleDir: base.bundleDir },
      trainingPairs: training.numPairs,
      ...(validation ? { validationPairs: validation.numPairs } : {}),
    });
    const id = `ftjob-${randomBytes(9).toString('base64url').replace(/[-_]/g, 'x').toLowerCase()}`;
    const job = await this.o.store.insertJob(
      {
        id,
        method: methodName,
        baseModel,
        trainingFile: training.id,
        validationFile: validation?.id ?? '',
        hyperparameters: hp as Record<string, unknown>,
        suffix,
      },
      { type: 'state', message: 'job created', data: { state: 'queued' } },
    );
    this.kick();
    return job;
  }

  async get(id: string): Promise<JobRecord> {
    const j = await this.o.store.getJob(id);
    if (!j) throw new JobNotFoundError(id);
    return j;
  }

  async list(pageSize: number, pageToken: string): Promise<{ jobs: JobRecord[]; nextPageToken: string }> {
    const size = pageSize === 0 ? 20 : Math.min(Math.max(1, pageSize), 100);
    let before: number | undefined;
    if (pageToken) {
      before = Number(Buffer.from(pageToken, 'base64url').toString('utf8').replace(/^ord:/, ''));
      if (!Number.isInteger(before) || before < 1)
        throw new FineTuneValidationError('page_token is not one this server issued');
    }
    const { jobs, nextOrd } = await this.o.store.listJobs(size, before);
    return { jobs, nextPageToken: nextOrd === undefined ? '' : Buffer.from(`ord:${nextOrd}`).toString('base64url') };
  }

  /** The job's events after `afterSequence`; at most `limit` (a page) when given. */
  async events(id: string, afterSequence = 0, limit?: number): Promise<JobEventRecord[]> {
    await this.get(id);
    return this.o.store.events(id, afterSequence, limit);
  }

  /** The job's state as of event `sequence` (queued before any state event). */
  async stateAt(id: string, sequence: number): Promise<JobState> {
    const ev = await this.o.store.stateEventAt(id, sequence);
    return ev && typeof ev.data.state === 'string' ? (ev.data.state as JobState) : 'queued';
  }

  /**
   * Wakes `listener` on every new event of the job, whichever instance wrote it (once start() has
   * hooked the store's notifications; this process's own writes always). Returns the unsubscribe
   * function.
   */
  subscribe(id: string, listener: JobListener): () => void {
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set!.delete(listener);
      if (set!.size === 0 && this.listeners.get(id) === set) this.listeners.delete(id);
    };
  }

  async cancel(id: string): Promise<JobRecord> {
    const job = await this.get(id);
    if (TERMINAL_STATES.has(job.state)) throw new JobStateError(`job ${id} is already ${job.state}`);
    const wait = this.o.cancelWaitMs ?? 10_000;
    const a = this.active;
    if (a && a.id === id) {
      a.reason = 'cancel';
      a.controller.abort(new FineTuneCancelledError());
      // The method stops promptly (it honours the signal); bounded wait so the call never hangs.
      await Promise.race([a.done, new Promise((r) => setTimeout(r, wait).unref())]);
      return this.get(id);
    }
    if (job.state === 'queued') {
      const ev = await this.o.store.cancelQueued(id, {
        type: 'state',
        message: 'cancelled before it started',
        data: { state: 'cancelled' },
      });
      if (ev) {
        this.wake(id, { sequence: ev.sequence, event: ev });
        return this.get(id);
      }
    }
    // Another instance owns it: ask through the database, and wait for the owner to act.
    await this.o.store.requestCancel(id);
    await this.untilFinished(id, wait);
    return this.get(id);
  }

  counts(): Promise<Record<string, number>> {
    return this.o.store.jobCountsByState();
  }

  /**
   * After a restart: jobs that were validating or running when the process died are re-queued
   * (they resume from their last checkpoint) when their method can resume, else failed with the
   * reason. Then the queue starts.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.unlisten = this.o.store.onNotification((n) => this.notified(n));
    await this.recover();
    this.kick();
    // Heartbeat, cancels whose notification was lost, recovery of jobs of vanished instances,
    // jobs queued elsewhere (when no notification told us).
    this.timer = setInterval(() => void this.tick(), this.o.heartbeatMs ?? 2000);
    this.timer.unref();
  }

  private notified(n: StoreNotification): void {
    if (n.kind === 'job_queued') this.kick();
    else if (n.kind === 'job_event') this.wake(n.jobId, { sequence: n.sequence });
    else if (n.kind === 'cancel_requested') {
      const a = this.active;
      if (a && a.id === n.jobId && !a.controller.signal.aborted) {
        a.reason = 'cancel';
        a.controller.abort(new FineTuneCancelledError());
      }
    } else if (n.kind === 'resync') {
      for (const id of this.listeners.keys()) this.wake(id, { sequence: Infinity });
      void this.tick();
    }
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      const a = this.active;
      if (a) {
        await this.o.store.heartbeat(a.id, this.owner);
        if ((await this.o.store.getJob(a.id))?.cancelRequested && !a.controller.signal.aborted) {
          a.reason = 'cancel';
          a.controller.abort(new FineTuneCancelledError());
        }
      }
      await this.recover();
      this.kick();
      for (const [id, at] of this.lastEventWrite)
        if (at < Date.now() - 1000 && !this.outbox.has(id)) this.lastEventWrite.delete(id);
    } catch (err) {
      this.o.logger.error({ err }, 'fine-tune housekeeping failed');
    } finally {
      this.ticking = false;
    }
  }

  /** Jobs left validating/running by a process that is gone: re-queued when resumable, else failed. */
  private async recover(): Promise<void> {
    const staleBefore = Date.now() - (this.o.staleMs ?? 60_000);
    for (const job of await this.o.store.jobsInStates(['queued', 'validating_files', 'running'])) {
      if (job.owner === this.owner || (job.state === 'queued' && job.owner === '')) continue;
      // Another process on this host shares our clock: a few missed heartbeats mean it is gone
      // (typically this server before a restart). Other hosts get a margin for clock skew.
      const sameHostDead =
        job.owner.split('/')[0] === this.hostname && job.heartbeatMs < Date.now() - 2.5 * (this.o.heartbeatMs ?? 2000);
      const gone = job.owner === '' || sameHostDead || job.heartbeatMs < staleBefore;
      if (!gone) continue;
      // Several instances may notice at once: the one that adopts the job records its fate.
      if (!(await this.o.store.adoptJob(job.id, job.owner, job.heartbeatMs, this.owner))) continue;
      if (job.state === 'queued') {
        // claimed, then its owner died before starting it
      } else if ((this.o.resumable ?? RESUMABLE).has(job.method) && this.methods.has(job.method)) {
        const where = job.method === 'adapter' ? 'from its last checkpoint' : 'where it left off';
        await this.transition(
          job.id,
          'queued',
          `the server stopped while the job was ${job.state}; it resumes ${where}`,
          { data: { resumed: true } },
        );
      } else {
        await this.fail(job.id, {
          code: 'interrupted',
          message: `the server stopped while the job was ${job.state}, and the ${job.method} method cannot resume`,
        });
      }
      await this.o.store.releaseJob(job.id); // queued and free: any instance may claim it
    }
  }

  /** Stops the running job without changing its recorded state (the next start resumes it). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.unlisten();
    const a = this.active;
    if (a) {
      a.reason = 'shutdown';
      a.controller.abort(SHUTDOWN_ABORT_REASON);
      await a.done;
    }
  }

  // -- the queue -------------------------------------------------------------------------------

  private kick(): void {
    if (!this.started || this.closed) return;
    this.kicked = true;
    if (this.pumping) return;
    this.pumping = true;
    setImmediate(() => void this.pump());
  }

  private async pump(): Promise<void> {
    try {
      while (!this.closed && this.kicked) {
        this.kicked = false;
        for (;;) {
          if (this.closed) return;
          const next = await this.o.store.claimNextJob(this.owner);
          if (!next) break;
          await this.runClaimed(next);
        }
      }
    } catch (err) {
      // The database is unreachable (say): the next tick kicks the queue again.
      this.o.logger.error({ err }, 'cannot read the fine-tune queue');
    } finally {
      this.pumping = false;
    }
  }

  private async runClaimed(next: JobRecord): Promise<void> {
    const controller = new AbortController();
    let finish!: () => void;
    const active: ActiveJob = {
      id: next.id,
      controller,
      reason: undefined,
      done: new Promise<void>((r) => (finish = r)),
    };
    this.active = active;
    this.o.logger.info({ job: next.id, owner: this.owner }, 'fine-tune job claimed');
    try {
      await this.execute(next, active);
    } catch (err) {
      // Recording the outcome failed (e.g. the disk is full): give the job up so that another
      // instance, or this one after a restart, recovers it instead of it staying ours forever.
      this.o.logger.error({ err, job: next.id }, 'fine-tune job bookkeeping failed');
      try {
        await this.o.store.releaseJob(next.id);
      } catch (releaseErr) {
        this.o.logger.error({ err: releaseErr, job: next.id }, 'cannot release the fine-tune job');
      }
    } finally {
      this.active = undefined;
      finish();
    }
  }

  private async execute(job: JobRecord, active: ActiveJob): Promise<void> {
    const log = this.o.logger.child({ job: job.id });
    const method = this.methods.get(job.method);
    if (!method)
      return this.fail(job.id, {
        code: 'method_unavailable',
        message: `method "${job.method}" is not available on this server`,
      });
    const workDir = path.join(this.o.dataDir, 'jobs', job.id);
    fs.mkdirSync(workDir, { recursive: true });
    const signal = active.controller.signal;
    if (job.cancelRequested) {
      active.reason = 'cancel';
      active.controller.abort(new FineTuneCancelledError());
    }
    try {
      if (signal.aborted) throw new FineTuneCancelledError();
      await this.transition(
        job.id,
        'validating_files',
        'validating the dataset',
        job.startedAt ? {} : { startedAt: nowSeconds() },
      );
      const datasetDir = await this.prepareDataset(job, workDir, signal);
      if (datasetDir === undefined) return; // failed (recorded) or interrupted
      const base = await this.o.registry.get(job.baseModel);
      await this.transition(job.id, 'running', `training with the ${job.method} method from ${base.version}`);
      // Unique per job; characters a directory name cannot safely carry become "-".
      const baseName =
        base.version
          .replace(/[^A-Za-z0-9._-]/g, '-')
          .replace(/^[^A-Za-z0-9]+/, '')
          .slice(0, 80) || 'model';
      const outputVersion = `${baseName}-ft${job.suffix ? `-${job.suffix}` : ''}-${job.id.slice('ftjob-'.length, 'ftjob-'.length + 8)}`;
      const result = await method.run({
        jobId: job.id,
        hyperparameters: job.hyperparameters as Hyperparameters,
        datasetDir,
        workDir,
        baseModel: { version: base.version, bundleDir: base.bundleDir },
        outputVersion,
        signal,
        emit: (e) => this.methodEvent(job.id, e),
      });
      await this.written(job.id); // the method's last events are recorded before its outcome
      if (signal.aborted) throw new FineTuneCancelledError();
      if (!(await this.stillOwned(job.id)))
        return log.warn('another instance took the job over while it ran here: discarding this run');
      const after = result.metrics ?? (await this.get(job.id)).metricsAfter;
      const manifest = JSON.parse(fs.readFileSync(path.join(result.bundleDir, 'clipserve.json'), 'utf8')) as {
        version: string;
        name: string;
      };
      const record = await this.o.registry.registerFineTuned({
        version: manifest.version,
        name: manifest.name,
        bundleDir: result.bundleDir,
        parentVersion: base.version,
        jobId: job.id,
        metrics: after,
      });
      const current = await this.get(job.id);
      if (!(await this.o.store.events(job.id)).some((e) => e.type === 'report')) {
        await this.event(job.id, {
          type: 'report',
          message: `fine-tuned model ${record.version}`,
          data: { metrics_before: current.metricsBefore, metrics_after: after, fine_tuned_model: record.version },
        });
      }
      await this.transition(
        job.id,
        'succeeded',
        `fine-tuned model ${record.version} is ready (activate it with: clipserve finetune models activate ${record.version})`,
        {
          fineTunedModel: record.version,
          metricsAfter: after,
          finishedAt: nowSeconds(),
          data: { fine_tuned_model: record.version },
        },
      );
      log.info({ version: record.version }, 'fine-tune job succeeded');
    } catch (err) {
      await this.written(job.id);
      if (!(await this.stillOwned(job.id)))
        return log.warn({ err }, 'another instance took the job over while it ran here: discarding this run');
      if (active.reason === 'storage') {
        // Free what the failed job leaves (often what filled the disk) before recording the failure.
        for (const f of method.failedJobLeftovers ?? [])
          fs.rmSync(path.join(workDir, f), { recursive: true, force: true });
        const cause = active.storageError instanceof Error ? active.storageError.message : String(active.storageError);
        log.error({ err: active.storageError }, 'cannot record the fine-tune job progress: failing it');
        return this.fail(job.id, {
          code: 'storage_error',
          message: `cannot record the job's progress in the data directory: ${cause}`,
        });
      }
      if (signal.aborted && active.reason === 'shutdown') {
        await this.event(job.id, {
          type: 'log',
          message: 'the server is shutting down: the job will resume after the restart',
        });
        return;
      }
      if (signal.aborted || err instanceof FineTuneCancelledError) {
        await this.transition(job.id, 'cancelled', 'cancelled', { finishedAt: nowSeconds() });
        // Free the disk: a cancelled job's features and checkpoints are never used again.
        fs.rmSync(workDir, { recursive: true, force: true });
        return;
      }
      log.warn({ err }, 'fine-tune job failed');
      const dataError = err instanceof DatasetError || err instanceof FineTuneDataError;
      await this.fail(job.id, {
        code: dataError ? 'invalid_file' : 'training_failed',
        message: err instanceof Error ? err.message : String(err),
        ...(dataError && err.rows.length ? { rows: err.rows } : {}),
      });
    }
  }

  /**
   * The job's own view of its data: `pairs.tsv` (and `validation.tsv`) with paths relative to
   * `<job>/dataset`, after checking every row. Returns undefined when the job failed validation.
   */
  private async prepareDataset(job: JobRecord, workDir: string, signal: AbortSignal): Promise<string | undefined> {
    const dir = path.join(workDir, 'dataset');
    fs.mkdirSync(dir, { recursive: true });
    const files: [string, string][] = [[job.trainingFile, PAIRS_FILE]];
    if (job.validationFile) files.push([job.validationFile, VALIDATION_FILE]);
    for (const [datasetId, file] of files) {
      const ds = await this.o.store.getDataset(datasetId);
      if (!ds) {
        await this.fail(job.id, { code: 'invalid_file', message: `dataset ${datasetId} no longer exists` });
        return undefined;
      }
      const rows = readDatasetRows(ds.dir, this.o.dataDir);
      const problems = await validateInBackground(rows, signal, this.o.imageLimits);
      if (signal.aborted) throw new FineTuneCancelledError();
      if (problems.length) {
        const which = file === PAIRS_FILE ? 'training file' : 'validation file';
        const unreadable = problems.filter((p) => p.problem.startsWith('unreadable')).map((p) => p.row);
        const empty = problems.filter((p) => p.problem === 'empty caption').map((p) => p.row);
        const parts = [
          unreadable.length ? `unreadable images in rows ${rowList(unreadable)}` : '',
          empty.length ? `empty captions in rows ${rowList(empty)}` : '',
        ].filter(Boolean);
        await this.event(job.id, {
          type: 'log',
          message: `${which} ${datasetId}: ${problems.length} problem(s)`,
          data: { problems: problems.slice(0, 1000) },
        });
        await this.fail(job.id, {
          code: 'invalid_file',
          message: `${which} ${datasetId}: ${parts.join('; ')} (1-based data rows)`,
          rows: [...new Set(problems.map((p) => p.row))].sort((a, b) => a - b),
        });
        return undefined;
      }
      writePairsFile(
        dir,
        rows.map((r) => ({ rel: path.relative(dir, r.image), caption: r.caption })),
        file,
      );
      await this.event(job.id, {
        type: 'log',
        message: `${file === PAIRS_FILE ? 'training' : 'validation'} file ${datasetId}: ${rows.length} pairs ok`,
      });
    }
    return dir;
  }

  // -- events and transitions ------------------------------------------------------------------

  /** False when recovery elsewhere re-queued the job (this instance was presumed gone). */
  private async stillOwned(jobId: string): Promise<boolean> {
    return (await this.o.store.getJob(jobId))?.owner === this.owner;
  }

  /** Until the job is finished or `ms` passed: woken by its events, re-read every 500 ms as well. */
  private async untilFinished(id: string, ms: number): Promise<void> {
    const end = Date.now() + ms;
    let wake = (): void => undefined;
    const unsubscribe = this.subscribe(id, () => wake());
    try {
      while (Date.now() < end && !TERMINAL_STATES.has((await this.get(id)).state)) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(500, Math.max(0, end - Date.now())));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      unsubscribe();
    }
  }

  private methodEvent(jobId: string, e: FineTuneMethodEvent): void {
    const data = e.data ?? {};
    const update: JobUpdate = {};
    if (e.type === 'step') {
      if (typeof data.step === 'number') update.step = data.step;
      if (typeof data.total_steps === 'number') update.totalSteps = data.total_steps;
    }
    if (typeof data.metrics_before === 'object' && data.metrics_before)
      update.metricsBefore = data.metrics_before as Record<string, number>;
    if (typeof data.metrics_after === 'object' && data.metrics_after)
      update.metricsAfter = data.metrics_after as Record<string, number>;
    // A method's own 'state' events are progress notes; the runner owns the job's state.
    // emit() runs inside the method (a worker's message listener, say) and cannot wait: the write
    // is queued behind the job's earlier ones; when it fails the job is stopped and execute()
    // records the failure.
    this.event(jobId, { type: e.type === 'state' ? 'log' : e.type, message: e.message, data }, update).catch(
      (err: unknown) => {
        const a = this.active;
        if (a && a.id === jobId && !a.controller.signal.aborted) {
          a.reason = 'storage';
          a.storageError = err;
          a.controller.abort(err);
        }
      },
    );
  }

  /** Appends an event after the job's earlier ones and wakes this process's watchers with it. */
  private event(jobId: string, e: FineTuneMethodEvent, update?: JobUpdate): Promise<JobEventRecord> {
    return new Promise<JobEventRecord>((resolve, reject) => {
      let box = this.outbox.get(jobId);
      const item: PendingEvent = {
        type: e.type,
        message: e.message ?? '',
        data: e.data ?? {},
        update,
        resolve,
        reject,
      };
      if (box) return void box.pending.push(item);
      box = { pending: [item], drained: Promise.resolve() };
      this.outbox.set(jobId, box);
      box.drained = this.writeOutbox(jobId, box);
    });
  }

  /** Writes the job's pending events until none are left; those raised meanwhile go in the next batch. */
  private async writeOutbox(jobId: string, box: Outbox): Promise<void> {
    await Promise.resolve(); // let the caller finish raising what it raises in the same turn
    while (box.pending.length > 0) {
      const wait = (this.lastEventWrite.get(jobId) ?? 0) + EVENT_WRITE_INTERVAL_MS - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      this.lastEventWrite.set(jobId, Date.now());
      const batch = box.pending.splice(0, MAX_EVENT_BATCH);
      try {
        const recs = await this.o.store.appendEvents(jobId, batch);
        for (const [i, rec] of recs.entries()) {
          this.wake(jobId, { sequence: rec.sequence, event: rec });
          batch[i].resolve(rec);
        }
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.outbox.delete(jobId);
  }

  /** Resolves once every event raised so far for the job is written. */
  private async written(jobId: string): Promise<void> {
    await this.outbox.get(jobId)?.drained;
  }

  private wake(jobId: string, w: { sequence: number; event?: JobEventRecord }): void {
    const set = this.listeners.get(jobId);
    if (!set) return;
    for (const l of [...set]) {
      try {
        l(w);
      } catch (err) {
        this.o.logger.error({ err }, 'fine-tune event listener failed');
      }
    }
  }

  private async transition(
    jobId: string,
    state: JobState,
    message: string,
    extra: JobUpdate & { data?: Record<string, unknown> } = {},
  ): Promise<void> {
    const { data, ...update } = extra;
    await this.event(jobId, { type: 'state', message, data: { ...(data ?? {}), state } }, { ...update, state });
  }

  private fail(jobId: string, error: JobErrorInfo): Promise<void> {
    return this.transition(jobId, 'failed', error.message, { error, finishedAt: nowSeconds(), data: { error } });
  }
}

/**
 * Dataset validation decodes every image: in a child process at the lowest CPU priority (its
 * libvips threads included), so a dataset of large photos never takes the cores serving needs.
 */
async function validateInBackground(
  rows: DatasetRow[],
  signal: AbortSignal,
  limits: ImageLimits | undefined,
): Promise<{ row: number; problem: string }[]> {
  // The pool only decodes here; any valid preprocessing config will do.
  const pool = new PreprocessPool({
    size: 1,
    cfg: resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 32 } }).preprocess_cfg,
    isolation: 'process',
    priority: 'low',
    ...(limits ? { limits } : {}),
  });
  try {
    return await validateDatasetRows(rows, signal, (bytes) => pool.verify(bytes, { signal }));
  } finally {
    await pool.close();
  }
}
