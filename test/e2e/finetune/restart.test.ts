/**
 * Crash safety: `node dist/cli/main.js serve --data-dir …` is killed with SIGKILL in the middle of
 * a running adapter job. The database passes PRAGMA integrity_check; after a restart the job's
 * events are intact (the ones seen before the kill, unchanged, then new ones) and the job resumes
 * from its last epoch checkpoint (its first step after the restart continues the count) and
 * succeeds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { SqliteStore } from '../../../server/src/store/sqlite-store';
import { compiledModule } from '../../../server/src/util/paths';
import {
  client,
  iconDataset,
  unary,
  uploadPairs,
  watchToEnd,
  type Any,
  type Client,
} from '../../helpers/finetune-fixtures';

jest.setTimeout(120_000);

interface Child {
  proc: ChildProcess;
  port: number;
}

const children = new Set<ChildProcess>();

/** Starts the CLI server and resolves once it logs that it serves (port from its log line). */
function startChild(args: string[]): Promise<Child> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [compiledModule('cli/main'), 'serve', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));
    let port = 0;
    let stderr = '';
    proc.stderr!.on('data', (b) => (stderr += String(b)));
    const timer = setTimeout(() => reject(new Error(`server did not become ready: ${stderr}`)), 60_000);
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      let rec: Any;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.msg === 'grpc server listening') port = rec.port;
      if (rec.msg === 'model ready: serving') {
        clearTimeout(timer);
        resolve({ proc, port });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before it was ready: ${stderr}`));
    });
  });
}

afterAll(() => {
  for (const p of children) p.kill('SIGKILL');
});

it('a job running when the server is SIGKILLed resumes from its checkpoint after the restart', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-crash-'));
  const dataDir = path.join(tmp, 'data');
  let ft: Client | undefined;
  try {
    await writeRandomBundle({ arch: 'tiny', seed: 5, outDir: path.join(tmp, 'base') });
    const args = [
      '--model',
      path.join(tmp, 'base'),
      '--data-dir',
      dataDir,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--metrics-port',
      '0',
      '--http-port',
      '0',
      '--provider',
      'cpu',
      '--preprocess-workers',
      '1',
      '--intra-op-threads',
      '1',
    ];
    let child = await startChild(args);
    ft = client('FineTuneService', child.port);
    const ds = await uploadPairs(ft, 'icons', await iconDataset());
    // Long enough to be killed mid-run (about 6 steps per epoch).
    const { job } = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: ds.id,
      hyperparameters: { epochs: 200, batchSize: 16, learningRate: 0.02, validationSplit: 0.3, seed: 1 },
    });

    // Watch until a few epochs are checkpointed, then kill without warning.
    const seen: Any[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = (ft!.WatchFineTuneJob as (r: object) => import('@grpc/grpc-js').ClientReadableStream<Any>)({
        jobId: job.id,
      });
      call.on('data', (m: Any) => {
        seen.push(m.event);
        if (m.event.type === 'FINE_TUNE_EVENT_TYPE_EPOCH' && m.event.epoch >= 3) {
          child.proc.kill('SIGKILL');
          resolve();
        }
      });
      call.on('error', () => undefined); // the server dies under it
      call.on('end', () => reject(new Error('the job ended before it could be interrupted')));
    });
    await new Promise((r) => child.proc.once('exit', r));
    ft.close();

    const store = await SqliteStore.open(dataDir);
    try {
      expect(store.integrityCheck()).toBe('ok');
      expect((await store.getJob(job.id))!.state).toBe('running');
    } finally {
      await store.close();
    }
    // The checkpoint is written before its epoch event, so what we saw checkpointed must survive.
    // (Training may have checkpointed a later epoch between that event and the SIGKILL landing.)
    const checkpointedStepSeen = Math.max(
      ...seen.filter((e) => e.type === 'FINE_TUNE_EVENT_TYPE_EPOCH').map((e) => e.step),
    );

    child = await startChild(args);
    ft = client('FineTuneService', child.port);
    const events = (await watchToEnd(ft, job.id)).map((m) => m.event);
    const { job: finished } = await unary(ft, 'GetFineTuneJob', { jobId: job.id });
    expect(finished.error).toBeNull();
    expect(finished.state).toBe('FINE_TUNE_JOB_STATE_SUCCEEDED');

    // Events intact: contiguous sequence numbers, and what was seen before the kill unchanged.
    expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
    expect(events.slice(0, seen.length).map((e) => e.dataJson)).toEqual(seen.map((e) => e.dataJson));
    const messages = events.map((e) => e.message).join('\n');
    expect(messages).toMatch(/the server stopped while the job was running; it resumes from its last checkpoint/);
    expect(messages).toMatch(/reusing the features computed before/);
    const resumedAt = /resuming from the checkpoint after epoch (\d+) \(step (\d+) of (\d+)\)/.exec(messages);
    expect(resumedAt).not.toBeNull();
    const ckptStep = Number(resumedAt![2]);
    expect(Number(resumedAt![1])).toBeGreaterThanOrEqual(3);
    expect(ckptStep).toBeGreaterThanOrEqual(checkpointedStepSeen);
    // The first step after the restart continues from the checkpoint, not from 1.
    const restartIndex = events.findIndex((e) => /resumes from its last checkpoint/.test(e.message));
    const firstStepAfter = events.slice(restartIndex).find((e) => e.type === 'FINE_TUNE_EVENT_TYPE_STEP');
    expect(firstStepAfter.step).toBe(ckptStep + 1);
    expect(finished.step).toBe(finished.totalSteps);

    child.proc.kill('SIGTERM');
    await new Promise((r) => child.proc.once('exit', r));
    const after = await SqliteStore.open(dataDir);
    try {
      expect(after.integrityCheck()).toBe('ok');
    } finally {
      await after.close();
    }
  } finally {
    ft?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
