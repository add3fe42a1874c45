/**
 * The Store's queries, written once against Kysely (a typed query builder that compiles to each
 * dialect) and shared by the SQLite and PostgreSQL stores, which differ only in how they connect,
 * lock and notify. Every write runs in one transaction; the notifications it raises are sent with
 * pg_notify inside that transaction on PostgreSQL (delivered on commit, to every listener) and
 * emitted in this process after the commit on SQLite.
 */
import { Kysely, sql, type Selectable, type Transaction, type Updateable } from 'kysely';
import type { Database, DatasetsTable, JobEventsTable, JobsTable, ModelVersionsTable } from './schema';
import {
  JOB_STATES,
  StoreError,
  TERMINAL_STATES,
  type DatasetFormat,
  type DatasetRecord,
  type JobErrorInfo,
  type JobEventRecord,
  type JobRecord,
  type JobState,
  type JobUpdate,
  type ModelVersionRecord,
  type NewEvent,
  type NewJob,
  type Store,
  type StoreBackend,
  type StoreNotification,
} from './store';

/** The one channel every notification travels on (PostgreSQL LISTEN/NOTIFY). */
export const NOTIFY_CHANNEL = 'clipserve_store';

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function jobFromRow(r: Selectable<JobsTable>): JobRecord {
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
    createdAt: Number(r.created_at),
    startedAt: Number(r.started_at),
    finishedAt: Number(r.finished_at),
    error: r.error ? (JSON.parse(r.error) as JobErrorInfo) : undefined,
    metricsBefore: JSON.parse(r.metrics_before),
    metricsAfter: JSON.parse(r.metrics_after),
    step: Number(r.step),
    totalSteps: Number(r.total_steps),
    owner: r.owner,
    heartbeatMs: Number(r.heartbeat_ms),
    cancelRequested: Number(r.cancel_requested) !== 0,
  };
}

function datasetFromRow(r: Selectable<DatasetsTable>): DatasetRecord {
  return {
    id: r.id,
    name: r.name,
    format: r.format as DatasetFormat,
    dir: r.dir,
    numPairs: Number(r.num_pairs),
    bytes: Number(r.bytes),
    createdAt: Number(r.created_at),
    owner: r.owner,
  };
}

function eventFromRow(r: Selectable<JobEventsTable>): JobEventRecord {
  return {
    jobId: r.job_id,
    sequence: Number(r.seq),
    type: r.type,
    createdAtMs: Number(r.created_at_ms),
    message: r.message,
    data: JSON.parse(r.data),
  };
}

function modelVersionFromRow(r: Selectable<ModelVersionsTable>): ModelVersionRecord {
  return {
    version: r.version,
    name: r.name,
    bundleDir: r.bundle_dir,
    parentVersion: r.parent_version,
    jobId: r.job_id,
    createdAt: Number(r.created_at),
    metrics: JSON.parse(r.metrics),
  };
}

/** The columns a JobUpdate sets. */
function jobColumns(u: JobUpdate): Updateable<JobsTable> {
  const set: Updateable<JobsTable> = {};
  if (u.state !== undefined) set.state = u.state;
  if (u.fineTunedModel !== undefined) set.fine_tuned_model = u.fineTunedModel;
  if (u.startedAt !== undefined) set.started_at = u.startedAt;
  if (u.finishedAt !== undefined) set.finished_at = u.finishedAt;
  if (u.error !== undefined) set.error = u.error === null ? null : JSON.stringify(u.error);
  if (u.metricsBefore !== undefined) set.metrics_before = JSON.stringify(u.metricsBefore);
  if (u.metricsAfter !== undefined) set.metrics_after = JSON.stringify(u.metricsAfter);
  if (u.step !== undefined) set.step = u.step;
  if (u.totalSteps !== undefined) set.total_steps = u.totalSteps;
  return set;
}

/** Parses a notification payload; undefined for anything that is not one of ours. */
export function parseNotification(payload: string): StoreNotification | undefined {
  try {
    const n = JSON.parse(payload) as StoreNotification;
    return typeof n === 'object' && n !== null && typeof n.kind === 'string' ? n : undefined;
  } catch {
    return undefined;
  }
}

export abstract class SqlStore implements Store {
  private readonly listeners = new Set<(n: StoreNotification) => void>();

  protected constructor(
    readonly db: Kysely<Database>,
    readonly dataDir: string,
    readonly backend: StoreBackend,
    readonly sharedNotifications: boolean,
  ) {}

  private closed = false;

  /** Idempotent: the server's start-failure path and its shutdown may both close. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.release();
  }

  /** Frees the backend's connections and locks (once). */
  protected abstract release(): Promise<void>;

  onNotification(listener: (n: StoreNotification) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Hands a notification to this process's listeners (a throwing listener does not stop the rest). */
  protected emit(n: StoreNotification): void {
    for (const l of [...this.listeners]) {
      try {
        l(n);
      } catch {
        /* a listener's own failure is its business */
      }
    }
  }

  /** A transaction whose notifications are published with it (see the file comment). */
  protected async write<T>(
    fn: (trx: Transaction<Database>, notify: (n: StoreNotification) => void) => Promise<T>,
  ): Promise<T> {
    const notes: StoreNotification[] = [];
    const result = await this.db.transaction().execute(async (trx) => {
      const out = await fn(trx, (n) => notes.push(n));
      if (this.backend === 'postgres')
        for (const n of notes) await sql`SELECT pg_notify(${NOTIFY_CHANNEL}, ${JSON.stringify(n)})`.execute(trx);
      return out;
    });
    if (this.backend === 'sqlite') for (const n of notes) this.emit(n);
    return result;
  }

  // -- datasets ------------------------------------------------------------------------------

  async insertDataset(d: DatasetRecord): Promise<void> {
    await this.write(async (trx) => {
      const { value: ord } = await trx
        .updateTable('counters')
        .set({ value: sql`value + 1` })
        .where('name', '=', 'dataset_ord')
        .returning('value')
        .executeTakeFirstOrThrow();
      await trx
        .insertInto('datasets')
        .values({
          id: d.id,
          name: d.name,
          format: d.format,
          dir: d.dir,
          num_pairs: d.numPairs,
          bytes: d.bytes,
          created_at: d.createdAt,
          ord: Number(ord),
          owner: d.owner,
        })
        .execute();
    });
  }

  async getDataset(id: string): Promise<DatasetRecord | undefined> {
    const r = await this.db.selectFrom('datasets').selectAll().where('id', '=', id).executeTakeFirst();
    return r && datasetFromRow(r);
  }

  async listDatasets(
    owner: string,
    limit: number,
    beforeOrd?: number,
  ): Promise<{ datasets: DatasetRecord[]; nextOrd: number | undefined }> {
    let q = this.db.selectFrom('datasets').selectAll().where('owner', '=', owner);
    if (beforeOrd !== undefined) q = q.where('ord', '<', beforeOrd);
    const rows = await q
      .orderBy('ord', 'desc')
      .limit(limit + 1)
      .execute();
    const page = rows.slice(0, limit);
    return {
      datasets: page.map(datasetFromRow),
      nextOrd: rows.length > limit ? Number(page[page.length - 1].ord) : undefined,
    };
  }

  async countDatasets(owner: string): Promise<number> {
    const r = await this.db
      .selectFrom('datasets')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('owner', '=', owner)
      .executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async deleteDataset(id: string): Promise<boolean> {
    const r = await this.db.deleteFrom('datasets').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) === 1;
  }

  async unfinishedJobsReading(id: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .select('id')
      .where((eb) => eb.or([eb('training_file', '=', id), eb('validation_file', '=', id)]))
      .where('state', 'not in', [...TERMINAL_STATES])
      .orderBy('ord')
      .execute();
    return rows.map((r) => r.id);
  }

  // -- jobs ----------------------------------------------------------------------------------

  async insertJob(j: NewJob, firstEvent: NewEvent): Promise<JobRecord> {
    const row = await this.write(async (trx, notify) => {
      const { value: ord } = await trx
        .updateTable('counters')
        .set({ value: sql`value + 1` })
        .where('name', '=', 'job_ord')
        .returning('value')
        .executeTakeFirstOrThrow();
      const inserted = await trx
        .insertInto('jobs')
        .values({
          id: j.id,
          ord: Number(ord),
          method: j.method,
          base_model: j.baseModel,
          training_file: j.trainingFile,
          validation_file: j.validationFile,
          hyperparameters: JSON.stringify(j.hyperparameters),
          suffix: j.suffix,
          state: 'queued',
          created_at: nowSeconds(),
          error: null,
          last_seq: 1,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await trx
        .insertInto('job_events')
        .values({
          job_id: j.id,
          seq: 1,
          type: firstEvent.type,
          created_at_ms: Date.now(),
          message: firstEvent.message,
          data: JSON.stringify(firstEvent.data),
        })
        .execute();
      notify({ kind: 'job_event', jobId: j.id, sequence: 1 });
      notify({ kind: 'job_queued', jobId: j.id });
      return inserted;
    });
    return jobFromRow(row);
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const r = await this.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return r && jobFromRow(r);
  }

  async listJobs(limit: number, beforeOrd?: number): Promise<{ jobs: JobRecord[]; nextOrd: number | undefined }> {
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('ord', '<', beforeOrd ?? Number.MAX_SAFE_INTEGER)
      .orderBy('ord', 'desc')
      .limit(limit + 1)
      .execute();
    const page = rows.slice(0, limit);
    return { jobs: page.map(jobFromRow), nextOrd: rows.length > limit ? Number(page[page.length - 1].ord) : undefined };
  }

  async jobsInStates(states: readonly JobState[]): Promise<JobRecord[]> {
    if (states.length === 0) return [];
    const rows = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('state', 'in', [...states])
      .orderBy('ord', 'asc')
      .execute();
    return rows.map(jobFromRow);
  }

  async claimNextJob(owner: string): Promise<JobRecord | undefined> {
    // One statement: the subquery picks the oldest free queued job; on PostgreSQL FOR UPDATE SKIP
    // LOCKED makes concurrent claimers take different rows instead of queueing on the same one,
    // and the outer `owner = ''` re-check makes a lost race claim nothing. SQLite has one writer.
    const r = await this.db
      .updateTable('jobs')
      .set({ owner, heartbeat_ms: Date.now() })
      .where('id', '=', (eb) => {
        const next = eb
          .selectFrom('jobs')
          .select('id')
          .where('state', '=', 'queued')
          .where('owner', '=', '')
          .orderBy('ord', 'asc')
          .limit(1);
        return this.backend === 'postgres' ? next.forUpdate().skipLocked() : next;
      })
      .where('owner', '=', '')
      .where('state', '=', 'queued')
      .returningAll()
      .executeTakeFirst();
    return r && jobFromRow(r);
  }

  async heartbeat(id: string, owner: string): Promise<boolean> {
    const r = await this.db
      .updateTable('jobs')
      .set({ heartbeat_ms: Date.now() })
      .where('id', '=', id)
      .where('owner', '=', owner)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async adoptJob(id: string, fromOwner: string, seenHeartbeatMs: number, owner: string): Promise<boolean> {
    const r = await this.db
      .updateTable('jobs')
      .set({ owner, heartbeat_ms: Date.now() })
      .where('id', '=', id)
      .where('owner', '=', fromOwner)
      .where('heartbeat_ms', '=', seenHeartbeatMs)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async releaseJob(id: string): Promise<void> {
    await this.write(async (trx, notify) => {
      const r = await trx
        .updateTable('jobs')
        .set({ owner: '', heartbeat_ms: 0 })
        .where('id', '=', id)
        .returning('state')
        .executeTakeFirst();
      if (r?.state === 'queued') notify({ kind: 'job_queued', jobId: id });
    });
  }

  async cancelQueued(id: string, event: NewEvent): Promise<JobEventRecord | undefined> {
    const createdAtMs = Date.now();
    const seq = await this.write(async (trx, notify) => {
      const r = await trx
        .updateTable('jobs')
        .set({ state: 'cancelled', finished_at: nowSeconds(), last_seq: sql`last_seq + 1` })
        .where('id', '=', id)
        .where('state', '=', 'queued')
        .where('owner', '=', '')
        .returning('last_seq')
        .executeTakeFirst();
      if (!r) return undefined;
      const sequence = Number(r.last_seq);
      await trx
        .insertInto('job_events')
        .values({
          job_id: id,
          seq: sequence,
          type: event.type,
          created_at_ms: createdAtMs,
          message: event.message,
          data: JSON.stringify(event.data),
        })
        .execute();
      notify({ kind: 'job_event', jobId: id, sequence });
      return sequence;
    });
    return seq === undefined
      ? undefined
      : { jobId: id, sequence: seq, type: event.type, createdAtMs, message: event.message, data: event.data };
  }

  async requestCancel(id: string): Promise<void> {
    await this.write(async (trx, notify) => {
      await trx.updateTable('jobs').set({ cancel_requested: 1 }).where('id', '=', id).execute();
      notify({ kind: 'cancel_requested', jobId: id });
    });
  }

  async jobCountsByState(): Promise<Record<string, number>> {
    const counts: Record<string, number> = Object.fromEntries(JOB_STATES.map((s) => [s, 0]));
    const rows = await this.db
      .selectFrom('jobs')
      .select(['state', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('state')
      .execute();
    for (const r of rows) counts[r.state] = Number(r.n);
    return counts;
  }

  async updateJob(id: string, u: JobUpdate): Promise<JobRecord> {
    const set = jobColumns(u);
    const r =
      Object.keys(set).length > 0
        ? await this.db.updateTable('jobs').set(set).where('id', '=', id).returningAll().executeTakeFirst()
        : await this.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw new StoreError(`no job ${id}`);
    return jobFromRow(r);
  }

  // -- events --------------------------------------------------------------------------------

  async appendEvent(
    jobId: string,
    type: string,
    message: string,
    data: Record<string, unknown>,
    update?: JobUpdate,
  ): Promise<JobEventRecord> {
    return (await this.appendEvents(jobId, [{ type, message, data, update }]))[0];
  }

  async appendEvents(jobId: string, events: readonly (NewEvent & { update?: JobUpdate })[]): Promise<JobEventRecord[]> {
    if (events.length === 0) return [];
    const createdAtMs = Date.now();
    const merged: JobUpdate = Object.assign({}, ...events.map((e) => e.update ?? {}));
    const first = await this.write(async (trx, notify) => {
      // Bumping last_seq first takes the job row's write lock: concurrent appenders (another
      // replica recovering the job, a cancel) wait for each other instead of colliding on a number.
      const r = await trx
        .updateTable('jobs')
        .set({ ...jobColumns(merged), last_seq: sql`last_seq + ${events.length}` })
        .where('id', '=', jobId)
        .returning('last_seq')
        .executeTakeFirst();
      if (!r) throw new StoreError(`no job ${jobId}`);
      const start = Number(r.last_seq) - events.length + 1;
      await trx
        .insertInto('job_events')
        .values(
          events.map((e, i) => ({
            job_id: jobId,
            seq: start + i,
            type: e.type,
            created_at_ms: createdAtMs,
            message: e.message,
            data: JSON.stringify(e.data),
          })),
        )
        .execute();
      notify({ kind: 'job_event', jobId, sequence: start + events.length - 1 });
      return start;
    });
    return events.map((e, i) => ({
      jobId,
      sequence: first + i,
      type: e.type,
      createdAtMs,
      message: e.message,
      data: e.data,
    }));
  }

  async events(jobId: string, afterSequence = 0, limit?: number): Promise<JobEventRecord[]> {
    let q = this.db
      .selectFrom('job_events')
      .selectAll()
      .where('job_id', '=', jobId)
      .where('seq', '>', afterSequence)
      .orderBy('seq', 'asc');
    if (limit !== undefined && limit >= 0) q = q.limit(limit);
    return (await q.execute()).map(eventFromRow);
  }

  async stateEventAt(jobId: string, sequence: number): Promise<JobEventRecord | undefined> {
    const r = await this.db
      .selectFrom('job_events')
      .selectAll()
      .where('job_id', '=', jobId)
      .where('seq', '<=', sequence)
      .where('type', '=', 'state')
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r && eventFromRow(r);
  }

  // -- model versions ------------------------------------------------------------------------

  async upsertModelVersion(v: ModelVersionRecord): Promise<void> {
    await this.write(async (trx) => {
      const known = await trx
        .selectFrom('model_versions')
        .select('version')
        .where('version', '=', v.version)
        .executeTakeFirst();
      if (known) {
        await trx
          .updateTable('model_versions')
          .set({ name: v.name, bundle_dir: v.bundleDir })
          .where('version', '=', v.version)
          .execute();
        return;
      }
      const { value: ord } = await trx
        .updateTable('counters')
        .set({ value: sql`value + 1` })
        .where('name', '=', 'model_ord')
        .returning('value')
        .executeTakeFirstOrThrow();
      await trx
        .insertInto('model_versions')
        .values({
          version: v.version,
          ord: Number(ord),
          name: v.name,
          bundle_dir: v.bundleDir,
          parent_version: v.parentVersion,
          job_id: v.jobId,
          created_at: v.createdAt,
          metrics: JSON.stringify(v.metrics),
        })
        .onConflict((oc) => oc.column('version').doUpdateSet({ name: v.name, bundle_dir: v.bundleDir }))
        .execute();
    });
  }

  async getModelVersion(version: string): Promise<ModelVersionRecord | undefined> {
    const r = await this.db.selectFrom('model_versions').selectAll().where('version', '=', version).executeTakeFirst();
    return r && modelVersionFromRow(r);
  }

  async listModelVersions(): Promise<ModelVersionRecord[]> {
    const rows = await this.db
      .selectFrom('model_versions')
      .selectAll()
      .orderBy('created_at', 'desc')
      .orderBy('ord', 'desc')
      .execute();
    return rows.map(modelVersionFromRow);
  }

  async getSetting(key: string): Promise<string | undefined> {
    return (await this.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst())?.value;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.write(async (trx, notify) => {
      await trx
        .insertInto('settings')
        .values({ key, value })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
        .execute();
      notify({ kind: 'setting', key });
    });
  }
}
