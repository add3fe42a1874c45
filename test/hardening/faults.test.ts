/**
 * Faults of the serving process (`clipserve serve` as a child process, loopback only):
 *  - SIGTERM while callers keep it busy: every call the server admitted finishes OK; calls after
 *    the drain began are refused with UNAVAILABLE before any work (or cannot connect), and the
 *    process exits 0;
 *  - a model bundle with a corrupted, truncated or missing file, or a broken manifest, is refused
 *    at start with a message naming the file and the reason, and a non-zero exit.
 * Other faults are tested where their code lives: activating a broken model version keeps the old
 * one serving (test/e2e/serve/hotswap.test.ts), SIGKILL during a fine-tune job (test/e2e/finetune/restart.test.ts),
 * the data disk filling up during a job (test/hardening/faults-data-dir.test.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ensureDemoBundle } from '../../server/src/model/demo';
import { runServeExpectingFailure, startServerProcess, TEST_CACHE_DIR } from '../helpers/server-process';
import { embeddingClient } from '../helpers/clients';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('SIGTERM under load', () => {
  test('admitted calls all finish OK, later ones are refused cleanly, exit 0', async () => {
    const server = await startServerProcess([
      '--shutdown-grace-seconds',
      '20',
      '--max-queue-delay-ms',
      '20',
      '--intra-op-threads',
      '1',
      '--preprocess-workers',
      '1',
    ]);
    const client = embeddingClient(server.port).raw;
    const image = fs.readFileSync(
      path.join(
        __dirname,
        '..',
        'fixtures',
        'preprocess',
        fs.readdirSync(path.join(__dirname, '..', 'fixtures', 'preprocess')).find((f) => f.endsWith('.png'))!,
      ),
    );
    let signalledAt = Infinity;
    const results: { code: grpc.status; details: string; startedAt: number; endedAt: number }[] = [];
    const callOnce = (i: number) =>
      new Promise<{ code: grpc.status; details: string }>((resolve) => {
        const done = (err: grpc.ServiceError | null) =>
          resolve({ code: err ? err.code : grpc.status.OK, details: err?.details ?? '' });
        if (i % 2 === 0)
          client.EmbedText(
            { texts: [`caller ${i} says hello`, 'a red star on a white background'] },
            { deadline: Date.now() + 30_000 },
            done,
          );
        else client.EmbedImage({ images: [image] }, { deadline: Date.now() + 30_000 }, done);
      });
    // 24 callers in closed loops until the server refuses them.
    const callers = Array.from({ length: 24 }, async (_, i) => {
      for (;;) {
        const startedAt = performance.now();
        const r = await callOnce(i);
        results.push({ ...r, startedAt, endedAt: performance.now() });
        if (r.code !== grpc.status.OK) return;
      }
    });
    await sleep(1500);
    signalledAt = performance.now();
    server.child.kill('SIGTERM');
    await Promise.all(callers);
    const code = await server.exited;
    client.close();

    const failures = results.filter((r) => r.code !== grpc.status.OK);
    const unexpected = failures.filter(
      (r) =>
        !(
          r.code === grpc.status.UNAVAILABLE &&
          /server is shutting down|ECONNREFUSED|No connection established/.test(r.details)
        ),
    );
    const finishedAfterSignal = results.filter((r) => r.code === grpc.status.OK && r.endedAt > signalledAt).length;
    console.log(
      `SIGTERM under load: ${results.length} calls, ${results.length - failures.length} OK (${finishedAfterSignal} of them finished after the signal), ${failures.length} refused after the drain began`,
    );
    expect(unexpected.map((r) => `${grpc.status[r.code]}: ${r.details}`)).toEqual([]);
    expect(results.length - failures.length).toBeGreaterThan(50);
    // Calls were in flight at the signal and completed during the drain.
    expect(finishedAfterSignal).toBeGreaterThan(0);
    expect(code).toBe(0);
    expect(server.output()).toMatch(/draining: refusing new calls, finishing in-flight ones/);
  }, 120_000);
});

describe('a corrupted bundle is refused at start', () => {
  let demo: string;
  let tmp: string;

  beforeAll(async () => {
    demo = await ensureDemoBundle(TEST_CACHE_DIR);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-faults-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A copy of the demo bundle with one fault applied. */
  function damaged(name: string, damage: (dir: string) => void): string {
    const dir = path.join(tmp, name);
    fs.cpSync(demo, dir, { recursive: true });
    damage(dir);
    return dir;
  }

  const cases: [string, (dir: string) => void, RegExp][] = [
    [
      'one flipped byte in the weights',
      (dir) => {
        const f = path.join(dir, 'visual.onnx.data');
        const b = fs.readFileSync(f);
        b[b.length >> 1] ^= 0x10;
        fs.writeFileSync(f, b);
      },
      /visual\.onnx\.data.*checksum mismatch|checksum mismatch.*visual\.onnx\.data/,
    ],
    ['a truncated graph', (dir) => fs.truncateSync(path.join(dir, 'textual.onnx'), 1000), /textual\.onnx/],
    ['a missing vocabulary', (dir) => fs.rmSync(path.join(dir, 'vocab.bpe.txt.gz')), /vocab\.bpe\.txt\.gz/],
    [
      'a manifest that is not JSON',
      (dir) => fs.writeFileSync(path.join(dir, 'clipserve.json'), '{"format": '),
      /clipserve\.json/,
    ],
  ];

  test.each(cases)(
    '%s',
    async (name, damage, names) => {
      const dir = damaged(name.replace(/\W+/g, '-'), damage);
      const { code, output } = await runServeExpectingFailure(['--model', dir]);
      expect(code).not.toBe(0);
      expect(output).toMatch(names);
      // Said once, plainly, at error level; and the process did not start serving.
      expect(output).toMatch(/"level":50.*"msg":"model failed to load"/);
      expect(output).not.toMatch(/model ready: serving/);
    },
    60_000,
  );
});
