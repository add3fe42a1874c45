/**
 * The job runner with a stand-in training method (no model), on both store backends: the queue
 * runs one job at a time in order, and two server instances sharing one store never run the same
 * job, pass a cancel to the owner, and recover the job of an instance that vanished. (On SQLite the
 * two runners share one store handle, as processes of one host share the file; on PostgreSQL each
 * has its own connections and hears the other through LISTEN/NOTIFY.)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { DatasetCatalog } from '../../../server/src/finetune/dataset';
import { FineTuneJobRunner } from '../../../server/src/finetune/jobs';
import {
  FineTuneCancelledError,
  FineTuneValidationError,
  type FineTuneJobContext,
  type FineTuneMethod,
} from '../../../server/src/finetune/method';
import { ModelRegistry } from '../../../server/src/versions/registry';
import { openStore } from '../../../server/src/store/open';
import { SqliteStore } from '../../../server/src/store/sqlite-store';
import type { JobRecord, Store } from '../../../server/src/store/store';
import { startPostgres, type TestPostgres } from '../../helpers/postgres';
import { renderIcon } from '../../helpers/finetune-fixtures';

jest.setTimeout(60_000);

/** A method whose runs the test releases one by one; records who ran what. */
class StandInMethod implements FineTuneMethod {
  readonly name = 'adapter' as const;
  readonly runs: { instance: string; jobId: string }[] = [];
  private releases = new Map<string, () => void>();
  constructor(private readonly instance: string) {}
  validate(hp: { epochs?: number }): void {
    if (hp.epochs === 0) throw new FineTuneValidationError('epochs must be at least 1');
  }
  release(jobId: string): boolean {
    const r = this.releases.get(jobId);
    r?.();
    return r !== undefined;
  }
  async run(ctx: FineTuneJobContext) {
    this.runs.push({ instance: this.instance, jobId: ctx.jobId });
    ctx.emit({ type: 'step', data: { step: 1, total_steps: 1, loss: 1, learning_rate: 0.1 } });
    await new Promise<void>((resolve, reject) => {
      this.releases.set(ctx.jobId, resolve);
      ctx.signal.addEventListener('abort', () => reject(new FineTuneCancelledError()));
    });
    const out = path.join(ctx.workDir, 'bundle');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(
      path.join(out, 'clipserve.json'),
      JSON.stringify({ version: ctx.outputVersion, name: 'stand-in' }),
    );
    return { bundleDir: out, metrics: { 'text_to_image_R@1': 0.5 } };
  }
}

const until = async (pred: () => boolean | Promise<boolean>, what: string, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

let postgres: TestPostgres;
beforeAll(async () => {
  postgres = await startPostgres();
});
afterAll(async () => {
  await postgres?.stop();
});

describe.each(['sqlite', 'postgres'] as const)('fine-tune job runner on %s', (backend) => {
  let dataDir: string;
  let databaseUrl: string | undefined;
  const runners: FineTuneJobRunner[] = [];
  const stores: Store[] = [];

  async function instance(hostname: string, staleMs = 60_000) {
    const store = backend === 'sqlite' && stores.length > 0 ? stores[0] : await openStore({ dataDir, databaseUrl });
    if (!stores.includes(store)) stores.push(store);
    const registry = new ModelRegistry(store, dataDir);
    await registry.registerBase('base-1', 'stand-in', path.join(dataDir, 'nowhere'));
    const method = new StandInMethod(hostname);
    const runner = new FineTuneJobRunner({
      store,
      catalog: new DatasetCatalog(store, dataDir),
      registry,
      dataDir,
      methods: [method],
      activeVersion: () => 'base-1',
      logger: pino({ level: 'silent' }),
      hostname,
      heartbeatMs: 50,
      staleMs,
      cancelWaitMs: 5000,
    });
    runners.push(runner);
    return { store, runner, method, catalog: new DatasetCatalog(store, dataDir) };
  }

  beforeEach(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-jobs-'));
    databaseUrl = backend === 'postgres' ? await postgres.newDatabase() : undefined;
    fs.mkdirSync(path.join(dataDir, 'imgs'));
    const lines = ['filepath\ttitle'];
    for (const [i, c] of ['red', 'blue', 'green'].entries()) {
      fs.writeFileSync(path.join(dataDir, 'imgs', `${i}.png`), await renderIcon('star', c, 'white'));
      lines.push(`imgs/${i}.png\ta ${c} star`);
    }
    fs.writeFileSync(path.join(dataDir, 'train.csv'), lines.join('\n') + '\n');
  });

  afterEach(async () => {
    for (const r of runners.splice(0)) await r.close();
    for (const s of stores.splice(0)) await s.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs queued jobs one at a time in creation order', async () => {
    const a = await instance('host-a');
    const j1 = await a.runner.create({ trainingFile: 'train.csv' });
    const j2 = await a.runner.create({ trainingFile: 'train.csv', suffix: 'second' });
    await expect(a.runner.create({ trainingFile: 'train.csv', hyperparameters: { epochs: 0 } })).rejects.toThrow(
      FineTuneValidationError,
    );
    await expect(a.runner.create({ trainingFile: 'train.csv', method: 'nope' })).rejects.toThrow(/unknown method/);
    await expect(a.runner.create({ trainingFile: 'train.csv', baseModel: 'missing' })).rejects.toThrow(
      /no model version/,
    );
    await a.runner.start();
    await until(() => a.method.runs.length === 1, 'the first run');
    expect((await a.runner.get(j2.id)).state).toBe('queued');
    a.method.release(j1.id);
    await until(() => a.method.runs.length === 2, 'the second run');
    expect(await a.runner.get(j1.id)).toMatchObject({ state: 'succeeded', step: 1, totalSteps: 1 });
    expect((await a.runner.get(j1.id)).fineTunedModel).toMatch(/^base-1-ft-/);
    expect((await a.runner.get(j2.id)).state).toBe('running');
    a.method.release(j2.id);
    await until(async () => (await a.runner.get(j2.id)).state === 'succeeded', 'the second job');
    expect((await a.runner.get(j2.id)).fineTunedModel).toMatch(/^base-1-ft-second-/);
    expect(await a.runner.counts()).toMatchObject({ succeeded: 2, queued: 0, running: 0 });
    // Events in the order they were raised, numbered without gaps (the step came from inside the method).
    const events = await a.runner.events(j1.id);
    expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
    expect(events.map((e) => (e.type === 'state' ? e.data.state : e.type))).toEqual([
      'queued',
      'validating_files',
      'log',
      'running',
      'step',
      'report',
      'succeeded',
    ]);
  });

  it('shares a data directory between instances: one runner per job, cancels passed on, vanished owners recovered', async () => {
    const a = await instance('host-a');
    const b = await instance('host-b', 300);
    const job = await a.runner.create({ trainingFile: 'train.csv' });
    await a.runner.start();
    await b.runner.start();
    await until(
      async () => a.method.runs.length + b.method.runs.length === 1 && (await a.runner.get(job.id)).state === 'running',
      'one run',
    );
    await new Promise((r) => setTimeout(r, 400)); // several heartbeats: nobody else takes it
    expect(a.method.runs.length + b.method.runs.length).toBe(1);
    const [owner, other] = a.method.runs.length === 1 ? [a, b] : [b, a];

    // A cancel that reaches the other instance stops the owner's run.
    const cancelled: JobRecord = await other.runner.cancel(job.id);
    expect(cancelled.state).toBe('cancelled');
    expect(owner.method.release(job.id)).toBe(true); // the run had been started, and was aborted
  });

  it('recovers the job of an instance that vanished mid-run', async () => {
    const a = await instance('host-a');
    const job = await a.runner.create({ trainingFile: 'train.csv' });
    await a.runner.start();
    await until(
      async () => a.method.runs.length === 1 && (await a.runner.get(job.id)).state === 'running',
      'the run on a',
    );
    // a dies: no close, no more heartbeats; its record still says running, owned by a.
    clearInterval((a.runner as unknown as { timer: NodeJS.Timeout }).timer);
    // Two survivors notice at once: exactly one adopts the job, one "resumes" event is written.
    const b = await instance('host-b', 300);
    const c = await instance('host-c', 300);
    await Promise.all([b.runner.start(), c.runner.start()]);
    await until(() => [...b.method.runs, ...c.method.runs].some((r) => r.jobId === job.id), 'recovery by b or c');
    const survivor = b.method.runs.length === 1 ? b : c;
    const messages = (await survivor.runner.events(job.id)).map((e) => e.message);
    expect(messages.filter((m) => /resumes from its last checkpoint/.test(m))).toHaveLength(1);
    survivor.method.release(job.id);
    await until(
      async () => (await survivor.runner.get(job.id)).state === 'succeeded',
      'the job to succeed on the survivor',
    );
    expect((await survivor.runner.get(job.id)).owner).toBe(survivor.runner.owner);
    expect(b.method.runs.length + c.method.runs.length).toBe(1);
  });
});

describe('dataset uploads', () => {
  test('a rejected zip upload closes its file once (no double close of a reused descriptor)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-upload-'));
    const store = await SqliteStore.open(dir);
    try {
      const catalog = new DatasetCatalog(store, dir);
      // The upload's descriptor number is free again when yauzl opens the archive; closing it a
      // second time used to close yauzl's file, whose own close then threw EBADF and killed the server.
      for (let i = 0; i < 20; i++) {
        const up = await catalog.beginUpload({ name: 'bad', format: 'zip' });
        up.addChunk(Buffer.from('this is not a zip archive'));
        await expect(up.finish()).rejects.toThrow(/not a readable zip archive/);
      }
      await new Promise((r) => setTimeout(r, 100)); // let yauzl's asynchronous closes complete
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
