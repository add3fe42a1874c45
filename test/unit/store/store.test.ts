/**
 * The store contract, run against both backends (SQLite in a temporary data directory, and a real
 * PostgreSQL server started for the suite): per-job event sequences with the job update in the same
 * transaction, newest-first paging, claims that hand each job to exactly one of several concurrent
 * claimers (two store instances = two replicas), concurrent event appends without gaps or
 * collisions, notifications, model versions and settings, and migrations applied once by several
 * instances opening a fresh database at once. Then what is SQLite's alone: WAL, adopting a file
 * from before the migrations, and the refusals that keep it to one host.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { configFromEnv, resolveServeConfig } from '../../../server/src/serve/config';
import { openStore } from '../../../server/src/store/open';
import { PostgresStore } from '../../../server/src/store/postgres-store';
import { HOST_LOCK_FILE, networkFilesystem } from '../../../server/src/store/sqlite-guard';
import { DB_FILE, SqliteStore } from '../../../server/src/store/sqlite-store';
import { StoreError, type Store, type StoreNotification } from '../../../server/src/store/store';
import { startPostgres, type TestPostgres } from '../../helpers/postgres';

jest.setTimeout(60_000);

let postgres: TestPostgres;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

const job = (id: string) => ({
  id,
  method: 'adapter',
  baseModel: 'b',
  trainingFile: 'ds-1',
  validationFile: '',
  hyperparameters: { epochs: 2 },
  suffix: '',
});
const created = { type: 'state', message: 'job created', data: { state: 'queued' } };
const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

/**
 * Opens the backend under test. `replica()` is a second instance on the same database for
 * PostgreSQL; for SQLite it is the first one again: SQLite serves one host, whose processes queue
 * on the file lock, and a second handle in this same process would wait for it synchronously
 * (better-sqlite3's busy timeout) while holding up the event loop the first one needs to commit.
 */
interface Backend {
  open(): Promise<Store>;
  replica(first: Store): Promise<Store>;
}

describe.each(['sqlite', 'postgres'] as const)('Store on %s', (backend) => {
  let dir: string;
  let url: string | undefined;
  const opened: Store[] = [];
  const b: Backend = {
    async open() {
      const s = await openStore({ dataDir: dir, databaseUrl: url });
      opened.push(s);
      return s;
    },
    replica(first) {
      return backend === 'postgres' ? this.open() : Promise.resolve(first);
    },
  };
  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-store-'));
    url = backend === 'postgres' ? await postgres.newDatabase() : undefined;
  });
  afterEach(async () => {
    for (const s of opened.splice(0)) await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('numbers events per job and applies the job update with its event', async () => {
    const s = await b.open();
    expect(s.backend).toBe(backend);
    await s.insertJob(job('j1'), created);
    await s.insertJob(job('j2'), created);
    await s.appendEvent('j1', 'state', 'a', { state: 'running' }, { state: 'running', step: 0 });
    await s.appendEvent('j2', 'log', 'x', {});
    const e = await s.appendEvent(
      'j1',
      'step',
      '',
      { step: 1 },
      { step: 1, totalSteps: 10, metricsBefore: { r1: 0.5 } },
    );
    expect(e.sequence).toBe(3); // 1 is the creation event, written with the job
    expect((await s.events('j1')).map((x) => [x.sequence, x.message])).toEqual([
      [1, 'job created'],
      [2, 'a'],
      [3, ''],
    ]);
    expect((await s.events('j1', 2)).map((x) => x.data)).toEqual([{ step: 1 }]);
    expect(await s.getJob('j1')).toMatchObject({
      state: 'running',
      step: 1,
      totalSteps: 10,
      hyperparameters: { epochs: 2 },
      metricsBefore: { r1: 0.5 },
      error: undefined,
      cancelRequested: false,
    });
    expect(await s.jobCountsByState()).toMatchObject({ queued: 1, running: 1, succeeded: 0 });
    // An event for a job that does not exist is refused, nothing half-written.
    await expect(s.appendEvent('nope', 'log', '', {})).rejects.toThrow(StoreError);
    await expect(s.updateJob('nope', { step: 1 })).rejects.toThrow(StoreError);
    const failed = await s.updateJob('j2', {
      state: 'failed',
      error: { code: 'x', message: 'boom', rows: [3] },
      finishedAt: 7,
    });
    expect(failed).toMatchObject({ state: 'failed', error: { code: 'x', message: 'boom', rows: [3] }, finishedAt: 7 });
    expect((await s.updateJob('j2', { error: null })).error).toBeUndefined();
    expect(await s.getJob('nope')).toBeUndefined();
  });

  it('pages jobs newest first; claims hand each job to exactly one of several replicas', async () => {
    const s = await b.open();
    for (let i = 1; i <= 5; i++) await s.insertJob(job(`j${i}`), created);
    const p1 = await s.listJobs(2);
    expect(p1.jobs.map((j) => j.id)).toEqual(['j5', 'j4']);
    const p2 = await s.listJobs(2, p1.nextOrd);
    expect(p2.jobs.map((j) => j.id)).toEqual(['j3', 'j2']);
    expect(await s.listJobs(2, p2.nextOrd)).toEqual({
      jobs: [expect.objectContaining({ id: 'j1' })],
      nextOrd: undefined,
    });
    expect(
      (
        await s.cancelQueued('j2', {
          type: 'state',
          message: 'cancelled before it started',
          data: { state: 'cancelled' },
        })
      )?.data,
    ).toEqual({ state: 'cancelled' });
    expect((await s.getJob('j2'))!.state).toBe('cancelled');

    // Oldest first; a claimed job is nobody else's; heartbeats only count for the owner.
    expect((await s.claimNextJob('host/a'))!.id).toBe('j1');
    expect(await s.heartbeat('j1', 'host/b')).toBe(false);
    expect(await s.heartbeat('j1', 'host/a')).toBe(true);
    expect(await s.cancelQueued('j1', { type: 'state', message: 'x', data: {} })).toBeUndefined(); // claimed: only its owner may end it
    // Taking over from an owner presumed gone: only with its last heartbeat unchanged, only once.
    const seenHb = (await s.getJob('j1'))!.heartbeatMs;
    expect(await s.adoptJob('j1', 'host/b', seenHb, 'host/c')).toBe(false);
    expect(await s.adoptJob('j1', 'host/a', seenHb - 1, 'host/c')).toBe(false);
    const adoptions = await Promise.all(
      ['host/c', 'host/d', 'host/e'].map((o) => s.adoptJob('j1', 'host/a', seenHb, o)),
    );
    expect(adoptions.filter(Boolean)).toHaveLength(1);
    await s.releaseJob('j1');
    expect((await s.getJob('j1'))!.owner).toBe('');

    // Two instances (replicas), 40 concurrent claimers for 24 free jobs: each claimed exactly once.
    const t = await b.replica(s);
    for (let i = 6; i <= 25; i++) await (i % 2 ? s : t).insertJob(job(`j${i}`), created);
    const claims = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? s : t).claimNextJob(`host/${i}`)));
    const won = claims.filter((c) => c !== undefined).map((c) => c!.id);
    expect(won.length).toBe(24);
    expect(new Set(won).size).toBe(24);
    expect(await s.claimNextJob('host/late')).toBeUndefined();
    for (const c of claims.filter((x) => x)) expect((await s.getJob(c!.id))!.owner).toBe(c!.owner);
  });

  it('appends events from two replicas to one job without gaps or collisions', async () => {
    const s = await b.open();
    const t = await b.replica(s);
    await s.insertJob(job('j1'), created);
    const recs = await Promise.all(
      Array.from({ length: 60 }, (_, i) => (i % 2 ? s : t).appendEvent('j1', 'log', `m${i}`, { i }, { step: i })),
    );
    expect(recs.map((r) => r.sequence).sort((x, y) => x - y)).toEqual(Array.from({ length: 60 }, (_, i) => i + 2));
    expect((await t.events('j1')).map((e) => e.sequence)).toEqual(Array.from({ length: 61 }, (_, i) => i + 1));
  });

  it('raises notifications for queued jobs, events, cancel requests and settings', async () => {
    const s = await b.open();
    const seen: StoreNotification[] = [];
    s.onNotification((n) => seen.push(n));
    // A second instance's writes reach this one on PostgreSQL; on SQLite only the own process hears.
    const writer = await b.replica(s);
    await writer.insertJob(job('j1'), created);
    await writer.appendEvent('j1', 'log', 'hello', {});
    await writer.requestCancel('j1');
    await writer.setSetting('active_model_version', 'v2');
    await until(() => seen.length >= 5);
    expect(seen).toEqual([
      { kind: 'job_event', jobId: 'j1', sequence: 1 },
      { kind: 'job_queued', jobId: 'j1' },
      { kind: 'job_event', jobId: 'j1', sequence: 2 },
      { kind: 'cancel_requested', jobId: 'j1' },
      { kind: 'setting', key: 'active_model_version' },
    ]);
    expect((await s.getJob('j1'))!.cancelRequested).toBe(true);
    expect(await s.getSetting('active_model_version')).toBe('v2');
    expect(s.sharedNotifications).toBe(backend === 'postgres');
  });

  it('keeps model versions (newest first, upsert keeps lineage) and settings', async () => {
    const s = await b.open();
    await s.upsertModelVersion({
      version: 'base',
      name: 'ViT',
      bundleDir: '/b',
      parentVersion: '',
      jobId: '',
      createdAt: 100,
      metrics: {},
    });
    await s.upsertModelVersion({
      version: 'ft1',
      name: 'ViT',
      bundleDir: '/m/ft1',
      parentVersion: 'base',
      jobId: 'j1',
      createdAt: 100,
      metrics: { r1: 0.7 },
    });
    await s.upsertModelVersion({
      version: 'base',
      name: 'ViT2',
      bundleDir: '/b2',
      parentVersion: 'x',
      jobId: 'x',
      createdAt: 5,
      metrics: { a: 1 },
    });
    expect((await s.listModelVersions()).map((v) => v.version)).toEqual(['ft1', 'base']);
    expect(await s.getModelVersion('base')).toEqual({
      version: 'base',
      name: 'ViT2',
      bundleDir: '/b2',
      parentVersion: '',
      jobId: '',
      createdAt: 100,
      metrics: {},
    });
    expect((await s.getModelVersion('ft1'))!.metrics).toEqual({ r1: 0.7 });
    expect(await s.getSetting('k')).toBeUndefined();
    await s.setSetting('k', 'a');
    await s.setSetting('k', 'b');
    expect(await s.getSetting('k')).toBe('b');
    await s.insertDataset({
      id: 'ds-1',
      name: 'n',
      format: 'pairs',
      dir: '/d',
      numPairs: 3,
      bytes: 5_000_000_000,
      createdAt: 9,
      owner: '',
    });
    expect(await s.getDataset('ds-1')).toEqual({
      id: 'ds-1',
      name: 'n',
      format: 'pairs',
      dir: '/d',
      numPairs: 3,
      bytes: 5_000_000_000,
      createdAt: 9,
      owner: '',
    });
    // (Matched on the message: better-sqlite3's SqliteError is not always an Error to jest's realm.)
    const dup = await s
      .insertDataset({
        id: 'ds-1',
        name: 'n',
        format: 'pairs',
        dir: '/d',
        numPairs: 3,
        bytes: 5,
        createdAt: 9,
        owner: '',
      })
      .then(
        () => 'inserted',
        (e: unknown) => String(e),
      );
    expect(dup).toMatch(/UNIQUE constraint failed|duplicate key/);
  });

  it('pages datasets per owner, counts and deletes them, and names the unfinished jobs reading one', async () => {
    const s = await b.open();
    const ds = (id: string, owner: string) => ({
      id,
      name: id,
      format: 'pairs' as const,
      dir: `/d/${id}`,
      numPairs: 1,
      bytes: 1,
      createdAt: 9,
      owner,
    });
    for (const id of ['ds-a1', 'ds-a2', 'ds-a3']) await s.insertDataset(ds(id, 'alice'));
    await s.insertDataset(ds('ds-b1', 'bob'));
    const first = await s.listDatasets('alice', 2);
    expect(first.datasets.map((d) => d.id)).toEqual(['ds-a3', 'ds-a2']);
    const rest = await s.listDatasets('alice', 2, first.nextOrd);
    expect(rest.datasets.map((d) => d.id)).toEqual(['ds-a1']);
    expect(rest.nextOrd).toBeUndefined();
    expect(await s.countDatasets('alice')).toBe(3);
    expect(await s.countDatasets('bob')).toBe(1);
    await s.insertJob({ ...job('j-reads'), trainingFile: 'ds-a1' }, created);
    expect(await s.unfinishedJobsReading('ds-a1')).toEqual(['j-reads']);
    await s.appendEvent('j-reads', 'state', 'job failed', { state: 'failed' }, { state: 'failed' });
    expect(await s.unfinishedJobsReading('ds-a1')).toEqual([]);
    expect((await s.stateEventAt('j-reads', 1))!.data).toEqual({ state: 'queued' });
    expect((await s.stateEventAt('j-reads', 2))!.data).toEqual({ state: 'failed' });
    expect((await s.events('j-reads', 0, 1)).map((e) => e.sequence)).toEqual([1]);
    expect(await s.deleteDataset('ds-a1')).toBe(true);
    expect(await s.deleteDataset('ds-a1')).toBe(false);
    expect(await s.countDatasets('alice')).toBe(2);
  });

  it('applies the migrations once when several instances open a fresh database at once', async () => {
    // SQLite: one after the other in this process (see Backend); the later opens find nothing to do.
    const stores = backend === 'postgres' ? await Promise.all([b.open(), b.open(), b.open()]) : [await b.open()];
    if (backend === 'sqlite') {
      await stores[0].close();
      stores.splice(0, 1, await b.open(), await b.open(), await b.open());
    }
    await stores[0].insertJob(job('j1'), created);
    expect((await stores[2].getJob('j1'))!.state).toBe('queued');
    if (backend === 'postgres') {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        const r = await c.query('SELECT name FROM kysely_migration ORDER BY name');
        expect(r.rows.map((x) => x.name)).toEqual(['0001_initial', '0002_dataset_owner']);
      } finally {
        await c.end();
      }
    } else {
      const raw = new Database(path.join(dir, DB_FILE), { readonly: true });
      try {
        expect(raw.prepare('SELECT name FROM kysely_migration').all()).toEqual([
          { name: '0001_initial' },
          { name: '0002_dataset_owner' },
        ]);
      } finally {
        raw.close();
      }
    }
  });
});

describe('SQLite only', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-store-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('uses WAL and passes the integrity check', async () => {
    const s = await SqliteStore.open(dir);
    try {
      expect(String(s.pragma('journal_mode'))).toBe('wal');
      expect(s.integrityCheck()).toBe('ok');
    } finally {
      await s.close();
    }
  });

  it('adopts a database made before the migrations (ownership columns, event numbering, version order)', async () => {
    const old = new Database(path.join(dir, DB_FILE));
    old.exec(`CREATE TABLE jobs (
      id TEXT PRIMARY KEY, ord INTEGER NOT NULL UNIQUE, method TEXT NOT NULL, base_model TEXT NOT NULL,
      training_file TEXT NOT NULL, validation_file TEXT NOT NULL, hyperparameters TEXT NOT NULL,
      suffix TEXT NOT NULL, state TEXT NOT NULL, fine_tuned_model TEXT NOT NULL DEFAULT '',
      created_at INTEGER NOT NULL, started_at INTEGER NOT NULL DEFAULT 0, finished_at INTEGER NOT NULL DEFAULT 0,
      error TEXT, metrics_before TEXT NOT NULL DEFAULT '{}', metrics_after TEXT NOT NULL DEFAULT '{}',
      step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE job_events (job_id TEXT NOT NULL REFERENCES jobs(id), seq INTEGER NOT NULL, type TEXT NOT NULL,
      created_at_ms INTEGER NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq));
    CREATE TABLE model_versions (version TEXT PRIMARY KEY, name TEXT NOT NULL, bundle_dir TEXT NOT NULL, parent_version TEXT NOT NULL,
      job_id TEXT NOT NULL, created_at INTEGER NOT NULL, metrics TEXT NOT NULL);`);
    old
      .prepare(
        `INSERT INTO jobs (id, ord, method, base_model, training_file, validation_file, hyperparameters, suffix, state, created_at) VALUES ('old', 7, 'adapter', 'b', 'ds', '', '{}', '', 'running', 1)`,
      )
      .run();
    old
      .prepare(`INSERT INTO job_events VALUES ('old', 1, 'state', 1, 'a', '{}'), ('old', 2, 'log', 2, 'b', '{}')`)
      .run();
    old
      .prepare(
        `INSERT INTO model_versions VALUES ('a', 'n', '/a', '', '', 5, '{}'), ('b', 'n', '/b', 'a', 'old', 5, '{}')`,
      )
      .run();
    old.close();
    const s = await SqliteStore.open(dir);
    try {
      expect(await s.getJob('old')).toMatchObject({
        state: 'running',
        owner: '',
        heartbeatMs: 0,
        cancelRequested: false,
      });
      expect((await s.appendEvent('old', 'log', 'c', {})).sequence).toBe(3);
      const next = await s.insertJob(job('new'), created);
      expect((await s.listJobs(5)).jobs.map((j) => j.id)).toEqual(['new', 'old']);
      expect(next.state).toBe('queued');
      expect((await s.listModelVersions()).map((v) => v.version)).toEqual(['b', 'a']);
      expect(s.integrityCheck()).toBe('ok');
    } finally {
      await s.close();
    }
  });

  it('refuses a data directory on a network filesystem, saying to use --database-url', async () => {
    expect(networkFilesystem(0x6969)).toBe('nfs');
    expect(networkFilesystem(0xff534d42)).toBe('cifs');
    expect(networkFilesystem(0x00c36400)).toBe('ceph');
    expect(networkFilesystem(0xef53)).toBeUndefined(); // ext4
    expect(networkFilesystem(fs.statfsSync(dir).type)).toBeUndefined(); // this machine's /tmp
    await expect(SqliteStore.open(dir, { statfs: () => ({ type: 0x6969 }) })).rejects.toThrow(
      /network filesystem \(nfs\).*--database-url/,
    );
    expect(fs.existsSync(path.join(dir, DB_FILE))).toBe(false);
  });

  it('refuses a second host on the same SQLite database while the first holds it', async () => {
    const a = await SqliteStore.open(dir, { hostname: 'node-a' });
    try {
      await expect(SqliteStore.open(dir, { hostname: 'node-b' })).rejects.toThrow(
        /in use by host "node-a".*--database-url/,
      );
      // Processes of the same host share it (they share the WAL index).
      const sibling = await SqliteStore.open(dir, { hostname: 'node-a' });
      await sibling.close();
    } finally {
      await a.close();
    }
    // Released on close: the other host may now take it.
    const b = await SqliteStore.open(dir, { hostname: 'node-b' });
    await b.close();
    // A lock left by a host that died (not refreshed for longer than the stale window) is taken over.
    fs.writeFileSync(
      path.join(dir, HOST_LOCK_FILE),
      JSON.stringify({ host: 'node-c', pid: 1, heartbeatMs: Date.now() - 10 * 60_000 }),
    );
    const d = await SqliteStore.open(dir, { hostname: 'node-d' });
    await d.close();
  });
});

describe('PostgreSQL only', () => {
  it('--database-url / CLIPSERVE_DATABASE_URL: a postgres URL, with --data-dir for the files', () => {
    expect(resolveServeConfig({ dataDir: '/d', databaseUrl: 'postgresql://u@h/db' }).databaseUrl).toBe(
      'postgresql://u@h/db',
    );
    expect(
      resolveServeConfig(
        configFromEnv({ CLIPSERVE_DATA_DIR: '/d', CLIPSERVE_DATABASE_URL: 'postgres://u:p@h:5432/db' }),
      ).databaseUrl,
    ).toBe('postgres://u:p@h:5432/db');
    expect(() => resolveServeConfig({ databaseUrl: 'postgres://u@h/db' })).toThrow(/--database-url needs --data-dir/);
    const err = (() => {
      try {
        resolveServeConfig({ dataDir: '/d', databaseUrl: 'mysql://u:hunter2@h/db' });
      } catch (e) {
        return String(e);
      }
      return '';
    })();
    expect(err).toMatch(/--database-url must be a postgres:\/\/ or postgresql:\/\/ URL/);
    expect(err).not.toMatch(/hunter2/); // the message never echoes a password
  });

  it('refuses a URL that is not postgres:// and names the database without its password', async () => {
    await expect(PostgresStore.open('mysql://u:secret@h/db', '/tmp')).rejects.toThrow(/must start with postgres:\/\//);
    const err = await PostgresStore.open('postgres://u:secret@127.0.0.1:1/db', '/tmp').catch((e: Error) => e);
    expect(String(err)).toMatch(/cannot use the PostgreSQL database postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/db/);
    expect(String(err)).not.toMatch(/secret/);
  });
});
