/**
 * The SQLite catalogue: WAL mode, per-job event sequences with the job update in the same
 * transaction, newest-first paging, the conditional claim, and the migration of a database made
 * before the ownership columns existed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { DB_FILE, Store } from '../server/src/store/store';

describe('Store', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-store-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const job = (id: string) => ({ id, method: 'adapter', baseModel: 'b', trainingFile: 'ds-1', validationFile: '', hyperparameters: { epochs: 2 }, suffix: '' });

  it('uses WAL, numbers events per job, and applies the job update with its event', () => {
    const s = Store.open(dir);
    try {
      expect(String(s.db.pragma('journal_mode', { simple: true }))).toBe('wal');
      s.insertJob(job('j1'));
      s.insertJob(job('j2'));
      s.appendEvent('j1', 'state', 'a', { state: 'running' }, { state: 'running', step: 0 });
      s.appendEvent('j2', 'log', 'x', {});
      const e = s.appendEvent('j1', 'step', '', { step: 1 }, { step: 1, totalSteps: 10 });
      expect(e.sequence).toBe(2);
      expect(s.events('j1').map((x) => x.sequence)).toEqual([1, 2]);
      expect(s.events('j1', 1).map((x) => x.data)).toEqual([{ step: 1 }]);
      expect(s.getJob('j1')).toMatchObject({ state: 'running', step: 1, totalSteps: 10, hyperparameters: { epochs: 2 } });
      expect(s.jobCountsByState()).toMatchObject({ queued: 1, running: 1, succeeded: 0 });
      // An event for a job that does not exist is refused (foreign key), nothing half-written.
      expect(() => s.appendEvent('nope', 'log', '', {})).toThrow();
      expect(s.integrityCheck()).toBe('ok');
    } finally {
      s.close();
    }
  });

  it('pages jobs newest first and claims a queued job once', () => {
    const s = Store.open(dir);
    try {
      for (let i = 1; i <= 5; i++) s.insertJob(job(`j${i}`));
      const p1 = s.listJobs(2);
      expect(p1.jobs.map((j) => j.id)).toEqual(['j5', 'j4']);
      const p2 = s.listJobs(2, p1.nextOrd);
      expect(p2.jobs.map((j) => j.id)).toEqual(['j3', 'j2']);
      const p3 = s.listJobs(2, p2.nextOrd);
      expect(p3).toEqual({ jobs: [expect.objectContaining({ id: 'j1' })], nextOrd: undefined });
      expect(s.claimJob('j1', 'host/a')).toBe(true);
      expect(s.claimJob('j1', 'host/b')).toBe(false);
      expect(s.heartbeat('j1', 'host/b')).toBe(false);
      expect(s.heartbeat('j1', 'host/a')).toBe(true);
      expect(s.cancelQueued('j1')).toBe(false); // claimed: only its owner may end it
      expect(s.cancelQueued('j2')).toBe(true);
      expect(s.getJob('j2')!.state).toBe('cancelled');
    } finally {
      s.close();
    }
  });

  it('adds the ownership columns to a database from before them', () => {
    const old = new Database(path.join(dir, DB_FILE));
    old.exec(`CREATE TABLE jobs (
      id TEXT PRIMARY KEY, ord INTEGER NOT NULL UNIQUE, method TEXT NOT NULL, base_model TEXT NOT NULL,
      training_file TEXT NOT NULL, validation_file TEXT NOT NULL, hyperparameters TEXT NOT NULL,
      suffix TEXT NOT NULL, state TEXT NOT NULL, fine_tuned_model TEXT NOT NULL DEFAULT '',
      created_at INTEGER NOT NULL, started_at INTEGER NOT NULL DEFAULT 0, finished_at INTEGER NOT NULL DEFAULT 0,
      error TEXT, metrics_before TEXT NOT NULL DEFAULT '{}', metrics_after TEXT NOT NULL DEFAULT '{}',
      step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL DEFAULT 0)`);
    old.prepare(`INSERT INTO jobs (id, ord, method, base_model, training_file, validation_file, hyperparameters, suffix, state, created_at) VALUES ('old', 1, 'adapter', 'b', 'ds', '', '{}', '', 'running', 1)`).run();
    old.close();
    const s = Store.open(dir);
    try {
      expect(s.getJob('old')).toMatchObject({ state: 'running', owner: '', heartbeatMs: 0, cancelRequested: false });
    } finally {
      s.close();
    }
  });
});
