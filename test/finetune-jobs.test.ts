/**
 * The job runner with a stand-in training method (no model): the queue runs one job at a time in
 * order, and two server instances sharing one data directory never run the same job, pass a
 * cancel to the owner, and recover the job of an instance that vanished.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { DatasetCatalog } from '../server/src/finetune/dataset';
import { FineTuneJobRunner } from '../server/src/finetune/jobs';
import { FineTuneCancelledError, FineTuneValidationError, type FineTuneJobContext, type FineTuneMethod } from '../server/src/finetune/method';
import { ModelRegistry } from '../server/src/models/registry';
import { Store, type JobRecord } from '../server/src/store/store';
import { renderIcon } from './helpers/finetune-fixtures';

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
    fs.writeFileSync(path.join(out, 'clipserve.json'), JSON.stringify({ version: ctx.outputVersion, name: 'stand-in' }));
    return { bundleDir: out, metrics: { 'text_to_image_R@1': 0.5 } };
  }
}

const until = async (pred: () => boolean, what: string, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('fine-tune job runner', () => {
  let dataDir: string;
  const opened: { store: Store; runner: FineTuneJobRunner }[] = [];

  function instance(hostname: string, staleMs = 60_000) {
    const store = Store.open(dataDir);
    const registry = new ModelRegistry(store, dataDir);
    registry.registerBase('base-1', 'stand-in', path.join(dataDir, 'nowhere'));
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
    opened.push({ store, runner });
    return { store, runner, method, catalog: new DatasetCatalog(store, dataDir) };
  }

  beforeEach(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-jobs-'));
    fs.mkdirSync(path.join(dataDir, 'imgs'));
    const lines = ['filepath\ttitle'];
    for (const [i, c] of ['red', 'blue', 'green'].entries()) {
      fs.writeFileSync(path.join(dataDir, 'imgs', `${i}.png`), await renderIcon('star', c, 'white'));
      lines.push(`imgs/${i}.png\ta ${c} star`);
    }
    fs.writeFileSync(path.join(dataDir, 'train.csv'), lines.join('\n') + '\n');
  });

  afterEach(async () => {
    for (const o of opened.splice(0)) {
      await o.runner.close();
      o.store.close();
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs queued jobs one at a time in creation order', async () => {
    const a = instance('host-a');
    const j1 = await a.runner.create({ trainingFile: 'train.csv' });
    const j2 = await a.runner.create({ trainingFile: 'train.csv', suffix: 'second' });
    await expect(a.runner.create({ trainingFile: 'train.csv', hyperparameters: { epochs: 0 } })).rejects.toThrow(FineTuneValidationError);
    await expect(a.runner.create({ trainingFile: 'train.csv', method: 'nope' })).rejects.toThrow(/unknown method/);
    await expect(a.runner.create({ trainingFile: 'train.csv', baseModel: 'missing' })).rejects.toThrow(/no model version/);
    a.runner.start();
    await until(() => a.method.runs.length === 1, 'the first run');
    expect(a.runner.get(j2.id).state).toBe('queued');
    a.method.release(j1.id);
    await until(() => a.method.runs.length === 2, 'the second run');
    expect(a.runner.get(j1.id)).toMatchObject({ state: 'succeeded', step: 1, totalSteps: 1 });
    expect(a.runner.get(j1.id).fineTunedModel).toMatch(/^base-1-ft-/);
    expect(a.runner.get(j2.id).state).toBe('running');
    a.method.release(j2.id);
    await until(() => a.runner.get(j2.id).state === 'succeeded', 'the second job');
    expect(a.runner.get(j2.id).fineTunedModel).toMatch(/^base-1-ft-second-/);
    expect(a.runner.counts()).toMatchObject({ succeeded: 2, queued: 0, running: 0 });
  });

  it('shares a data directory between instances: one runner per job, cancels passed on, vanished owners recovered', async () => {
    const a = instance('host-a');
    const b = instance('host-b', 300);
    const job = await a.runner.create({ trainingFile: 'train.csv' });
    a.runner.start();
    b.runner.start();
    await until(() => a.method.runs.length + b.method.runs.length === 1 && a.runner.get(job.id).state === 'running', 'one run');
    await new Promise((r) => setTimeout(r, 400)); // several heartbeats: nobody else takes it
    expect(a.method.runs.length + b.method.runs.length).toBe(1);
    const [owner, other] = a.method.runs.length === 1 ? [a, b] : [b, a];

    // A cancel that reaches the other instance stops the owner's run.
    const cancelled: JobRecord = await other.runner.cancel(job.id);
    expect(cancelled.state).toBe('cancelled');
    expect(owner.method.release(job.id)).toBe(true); // the run had been started, and was aborted

  });

  it('recovers the job of an instance that vanished mid-run', async () => {
    const a = instance('host-a');
    const job = await a.runner.create({ trainingFile: 'train.csv' });
    a.runner.start();
    await until(() => a.method.runs.length === 1 && a.runner.get(job.id).state === 'running', 'the run on a');
    // a dies: no close, no more heartbeats; its record still says running, owned by a.
    clearInterval((a.runner as unknown as { timer: NodeJS.Timeout }).timer);
    const b = instance('host-b', 300);
    b.runner.start();
    await until(() => b.method.runs.some((r) => r.jobId === job.id), 'recovery by b');
    expect(b.runner.events(job.id).map((e) => e.message).join('\n')).toMatch(/resumes from its last checkpoint/);
    b.method.release(job.id);
    await until(() => b.runner.get(job.id).state === 'succeeded', 'the job to succeed on b');
    expect(b.runner.get(job.id).owner).toBe(b.runner.owner);
  });
});

describe('dataset uploads', () => {
  test('a rejected zip upload closes its file once (no double close of a reused descriptor)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-upload-'));
    const store = Store.open(dir);
    try {
      const catalog = new DatasetCatalog(store, dir);
      // The upload's descriptor number is free again when yauzl opens the archive; closing it a
      // second time used to close yauzl's file, whose own close then threw EBADF and killed the server.
      for (let i = 0; i < 20; i++) {
        const up = catalog.beginUpload({ name: 'bad', format: 'zip' });
        up.addChunk(Buffer.from('this is not a zip archive'));
        await expect(up.finish()).rejects.toThrow(/not a readable zip archive/);
      }
      await new Promise((r) => setTimeout(r, 100)); // let yauzl's asynchronous closes complete
    } finally {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
