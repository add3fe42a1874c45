/**
 * Scale-out on PostgreSQL: three `clipserve serve` processes (dist/cli/main.js) on one database
 * (--database-url, a throwaway real server) and one data directory, as replicas behind a load
 * balancer. Shows: a job is claimed by exactly one replica; a cancel sent to another replica stops
 * the owner's run within seconds; SIGKILL of the owner → another replica adopts the job and resumes
 * it from its checkpoint, and a watch on a survivor sees every event exactly once; an activation
 * on one replica is served by all (the figure is printed); 200 concurrent CreateFineTuneJob +
 * WatchFineTuneJob calls spread over the replicas lose nothing. And without PostgreSQL, a replica on
 * another host refuses a SQLite database in use. Needs `npm run build`.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import pg from 'pg';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import {
  client,
  iconDataset,
  unary,
  uploadPairs,
  waitForJob,
  watchToEnd,
  type Any,
  type Client,
} from '../../helpers/finetune-fixtures';
import { startPostgres, type TestPostgres } from '../../helpers/postgres';
import { runServeExpectingFailure, startServerProcess, type ServerProcess } from '../../helpers/server-process';
import { HOST_LOCK_FILE } from '../../../server/src/store/sqlite-guard';

jest.setTimeout(300_000);

interface Replica {
  name: string;
  proc: ServerProcess;
  ft: Client;
  models: Client;
  embed: Client;
}

let postgres: TestPostgres;
let databaseUrl: string;
let tmp: string;
let dataDir: string;
let baseDir: string;
const replicas: Replica[] = [];
/** Every "fine-tune job claimed" log line of every replica, in arrival order. */
const claims: { replica: string; job: string }[] = [];
let datasetId: string;

async function startReplica(name: string): Promise<Replica> {
  const proc = await startServerProcess(
    [
      '--model',
      baseDir,
      '--data-dir',
      dataDir,
      '--database-url',
      databaseUrl,
      '--provider',
      'cpu',
      '--preprocess-workers',
      '1',
      '--intra-op-threads',
      '1',
      '--log-level',
      'info',
    ],
    {
      onRecord: (rec) => {
        if (rec.msg === 'fine-tune job claimed') claims.push({ replica: name, job: String(rec.job) });
      },
    },
  );
  const r = {
    name,
    proc,
    ft: client('FineTuneService', proc.port),
    models: client('ModelService', proc.port),
    embed: client('EmbeddingService', proc.port),
  };
  replicas.push(r);
  return r;
}

function closeReplica(r: Replica): void {
  r.ft.close();
  r.models.close();
  r.embed.close();
  replicas.splice(replicas.indexOf(r), 1);
}

const claimsOf = (job: string) => claims.filter((c) => c.job === job);
const until = async (pred: () => boolean, what: string, ms = 60_000) => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};
const byName = (name: string) => replicas.find((r) => r.name === name)!;
/** Long enough to be interrupted (about 6 steps per epoch on the icon dataset). */
const LONG = { epochs: 200, batchSize: 16, learningRate: 0.02, validationSplit: 0.3, seed: 1 };
/** Runs for minutes: only a cancel ends it. */
const ENDLESS = { epochs: 10_000, batchSize: 8, validationSplit: 0.2 };

beforeAll(async () => {
  postgres = await startPostgres();
  databaseUrl = await postgres.newDatabase();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-replicas-'));
  dataDir = path.join(tmp, 'shared-data');
  baseDir = path.join(tmp, 'base');
  await writeRandomBundle({ arch: 'tiny', seed: 5, outDir: baseDir });
  // Started together: the migrations run once, under PostgreSQL's advisory lock.
  await Promise.all(['a', 'b', 'c'].map((n) => startReplica(n)));
  datasetId = (await uploadPairs(replicas[0].ft, 'icons', await iconDataset())).id;
});

afterAll(async () => {
  for (const r of [...replicas]) {
    closeReplica(r);
    await r.proc.stop();
  }
  await postgres?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

it('claims a job on exactly one replica; a cancel sent to another replica stops it within seconds', async () => {
  const [a] = replicas;
  const { job } = await unary(a.ft, 'CreateFineTuneJob', { trainingFile: datasetId, hyperparameters: ENDLESS });
  await until(() => claimsOf(job.id).length > 0, 'the claim');
  await waitForJob(a.ft, job.id, (j) => j.state === 'FINE_TUNE_JOB_STATE_RUNNING');
  await new Promise((r) => setTimeout(r, 3000)); // heartbeats and queue polls on every replica: nobody else takes it
  expect(claimsOf(job.id)).toHaveLength(1);
  const owner = claimsOf(job.id)[0].replica;
  const other = replicas.find((r) => r.name !== owner)!;

  const t0 = Date.now();
  const { job: cancelled } = await unary(other.ft, 'CancelFineTuneJob', { jobId: job.id });
  const tookMs = Date.now() - t0;
  console.log(`cancel sent to replica ${other.name}, job running on replica ${owner}: cancelled after ${tookMs} ms`);
  expect(cancelled.state).toBe('FINE_TUNE_JOB_STATE_CANCELLED');
  expect(tookMs).toBeLessThan(10_000);
  const events = await watchToEnd(other.ft, job.id);
  expect(events.map((m) => m.event.sequence)).toEqual(events.map((_, i) => i + 1));
  expect(events[events.length - 1].state).toBe('FINE_TUNE_JOB_STATE_CANCELLED');
});

it('SIGKILL of the owner: another replica resumes the job from its checkpoint; a watch on a survivor sees every event once', async () => {
  const { job } = await unary(replicas[0].ft, 'CreateFineTuneJob', { trainingFile: datasetId, hyperparameters: LONG });
  await until(() => claimsOf(job.id).length === 1, 'the claim');
  const owner = byName(claimsOf(job.id)[0].replica);
  const watcher = replicas.find((r) => r !== owner)!;
  let killed = false;
  const events = (
    await watchToEnd(watcher.ft, job.id, 0, (m) => {
      if (!killed && m.event.type === 'FINE_TUNE_EVENT_TYPE_EPOCH' && m.event.epoch >= 2) {
        killed = true;
        owner.proc.child.kill('SIGKILL');
      }
    })
  ).map((m) => m.event);
  expect(killed).toBe(true);
  closeReplica(owner);

  // Exactly one survivor adopted and ran it again.
  const runs = claimsOf(job.id);
  expect(runs).toHaveLength(2);
  expect(runs[1].replica).not.toBe(owner.name);
  const { job: finished } = await unary(watcher.ft, 'GetFineTuneJob', { jobId: job.id });
  expect(finished.state).toBe('FINE_TUNE_JOB_STATE_SUCCEEDED');
  expect(finished.step).toBe(finished.totalSteps);

  // Every event once, in order, as stored.
  expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
  const stored = (await watchToEnd(watcher.ft, job.id)).map((m) => m.event);
  expect(stored.map((e) => e.dataJson)).toEqual(events.map((e) => e.dataJson));
  const messages = events.map((e) => e.message);
  expect(
    messages.filter((m) => /the server stopped while the job was running; it resumes from its last checkpoint/.test(m)),
  ).toHaveLength(1);
  const resumed = messages
    .map((m) => /resuming from the checkpoint after epoch (\d+) \(step (\d+) of/.exec(m))
    .filter(Boolean);
  expect(resumed).toHaveLength(1);
  expect(Number(resumed[0]![1])).toBeGreaterThanOrEqual(2);
  // After the resume the steps continue from the checkpoint, each once.
  const restart = messages.findIndex((m) => /resumes from its last checkpoint/.test(m));
  const stepsAfter = events
    .slice(restart)
    .filter((e) => e.type === 'FINE_TUNE_EVENT_TYPE_STEP')
    .map((e) => e.step);
  expect(stepsAfter[0]).toBe(Number(resumed[0]![2]) + 1);
  expect(stepsAfter).toEqual(stepsAfter.map((_, i) => stepsAfter[0] + i));
  expect(stepsAfter[stepsAfter.length - 1]).toBe(finished.totalSteps);

  await startReplica(owner.name); // back to three for what follows
});

it('an activation on one replica is served by all of them', async () => {
  const { models } = await unary(replicas[0].models, 'ListModels', {});
  const fineTuned = (models as Any[]).find((m) => m.parentVersion) as Any;
  expect(fineTuned).toBeDefined();
  const [first, ...others] = replicas;
  const t0 = Date.now();
  await unary(first.models, 'ActivateModel', { version: fineTuned.version });
  const activatedMs = Date.now() - t0;
  const servedAt = await Promise.all(
    others.map(async (r) => {
      for (;;) {
        const info = await unary(r.embed, 'GetModelInfo', {});
        if (info.version === fineTuned.version) return Date.now() - t0;
        if (Date.now() - t0 > 30_000) throw new Error(`replica ${r.name} still serves ${info.version}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    }),
  );
  // The others hear of it once the first has loaded it (a version that fails to load is never announced).
  console.log(
    `ActivateModel on replica ${first.name} returned after ${activatedMs} ms; then served by ${others.map((r, i) => `${r.name} ${servedAt[i] - activatedMs} ms later`).join(', ')}`,
  );
  // The notification path, not the 10 s polling fallback (order of magnitude: CI is loaded).
  for (const ms of servedAt) expect(ms - activatedMs).toBeLessThan(8000);
  const vec = await unary(others[0].embed, 'EmbedText', { texts: ['a red star'] });
  expect(vec.modelVersion ?? fineTuned.version).toBe(fineTuned.version);
});

it('200 concurrent CreateFineTuneJob + Watch calls across the replicas lose nothing', async () => {
  const N = 200;
  const pick = (i: number) => replicas[i % replicas.length];
  const t0 = Date.now();
  const created = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      unary(pick(i).ft, 'CreateFineTuneJob', {
        trainingFile: datasetId,
        suffix: `n${i}`,
        hyperparameters: { epochs: 1, seed: i },
      }),
    ),
  );
  const ids = created.map((r) => r.job.id as string);
  expect(new Set(ids).size).toBe(N);
  // A watch per job on another replica than the one that created it, opened while the jobs run.
  const watches = ids.map((id, i) => watchToEnd(pick(i + 1).ft, id));
  // Cancel them all through yet another replica (queued ones at once, running ones via their owner).
  await Promise.all(
    ids.map((id, i) =>
      unary(pick(i + 2).ft, 'CancelFineTuneJob', { jobId: id }).catch((err: grpc.ServiceError) => {
        if (!/already (succeeded|failed|cancelled)/.test(err.details)) throw err;
      }),
    ),
  );
  const streams = await Promise.all(watches);
  console.log(
    `${N} jobs created, watched and cancelled across ${replicas.length} replicas in ${Date.now() - t0} ms; ${streams.reduce((n, st) => n + st.length, 0)} events streamed`,
  );
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    for (const [i, stream] of streams.entries()) {
      const seqs = stream.map((m) => m.event.sequence);
      expect(seqs).toEqual(seqs.map((_, k) => k + 1)); // from the creation event on, no gap, no repeat
      expect(stream[0].event.message).toBe('job created');
      expect([
        'FINE_TUNE_JOB_STATE_CANCELLED',
        'FINE_TUNE_JOB_STATE_SUCCEEDED',
        'FINE_TUNE_JOB_STATE_FAILED',
      ]).toContain(stream[stream.length - 1].state);
      const { rows } = await db.query('SELECT count(*)::int AS n, max(seq) AS last FROM job_events WHERE job_id = $1', [
        ids[i],
      ]);
      expect(rows[0]).toEqual({ n: seqs.length, last: seqs.length });
    }
    const { rows } = await db.query(`SELECT count(*)::int AS n FROM jobs WHERE suffix LIKE 'n%'`);
    expect(rows[0].n).toBe(N);
  } finally {
    await db.end();
  }
  // Claimed at most once each.
  for (const id of ids) expect(claimsOf(id).length).toBeLessThanOrEqual(1);
});

it('without --database-url, a replica on another host refuses the shared SQLite database and says what to use', async () => {
  const sqliteDir = path.join(tmp, 'sqlite-data');
  fs.mkdirSync(sqliteDir, { recursive: true });
  // What a replica on node-a leaves while it runs: the host lock, refreshed every 10 s.
  fs.writeFileSync(
    path.join(sqliteDir, HOST_LOCK_FILE),
    JSON.stringify({ host: 'node-a.example', pid: 1, heartbeatMs: Date.now() }),
  );
  const { code, output } = await runServeExpectingFailure([
    '--model',
    baseDir,
    '--data-dir',
    sqliteDir,
    '--provider',
    'cpu',
  ]);
  expect(code).not.toBe(0);
  expect(output).toMatch(/in use by host "node-a\.example"/);
  expect(output).toMatch(/--database-url postgres:\/\/… or CLIPSERVE_DATABASE_URL/);
  expect(fs.existsSync(path.join(sqliteDir, 'clipserve.db'))).toBe(false); // never opened
});
