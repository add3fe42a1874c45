/**
 * Issue 13, fine-tuning must not starve serving: while an adapter job computes the features of a
 * dataset of 12 MP photos (noisy 4032×3024 JPEGs of ~7 MB, which the old augmentation re-encoded
 * into PNGs beyond the 20 MB image limit), the gRPC health check keeps answering (target p99
 * ≤ 100 ms) and a served embedding's median latency at most doubles. `clipserve serve` runs as a
 * child process over loopback; a quiet phase and the job's phase are measured side by side and
 * printed (docs/reliability.md quotes them). Asserts only generous orders of magnitude, and that
 * the job succeeds.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import sharp from 'sharp';
import { client, unary, uploadPairs, waitForJob, type Any, type Client } from '../helpers/finetune-fixtures';
import { loopDelay, pct } from '../helpers/probes';
import { ServerProcess, startServerProcess } from '../helpers/server-process';

const healthApi = grpc.loadPackageDefinition(
  protoLoader.loadSync(HEALTH_PROTO, { defaults: true, enums: String }),
) as Any;
const PHASE_MS = Number(process.env.HARDENING_PHASE_MS ?? 6000);
const PHOTOS = 8;

function timed(c: Any, method: string, req: object): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) =>
    c[method](req, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null) =>
      resolve(err ? Infinity : performance.now() - t0),
    ),
  );
}

async function sample(until: () => boolean, fn: () => Promise<number>, pauseMs: number): Promise<number[]> {
  const out: number[] = [];
  while (!until()) {
    out.push(await fn());
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  return out;
}

describe('an adapter job on 12 MP photos beside serving', () => {
  let tmp: string;
  let server: ServerProcess;
  let ft: Client;
  let embed: Client;
  let health: Any;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-hardening-ft-'));
    server = await startServerProcess(['--data-dir', path.join(tmp, 'data')]);
    ft = client('FineTuneService', server.port);
    embed = client('EmbeddingService', server.port);
    health = new healthApi.grpc.health.v1.Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  }, 180_000);
  afterAll(async () => {
    for (const c of [ft, embed, health]) c?.close();
    await server?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('health p99 and embedding p50 while the job runs', async () => {
    const photos: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      photos.push(
        await sharp({
          create: {
            width: 4032,
            height: 3024,
            channels: 3,
            background: '#000000',
            noise: { type: 'gaussian', mean: 100 + 50 * i, sigma: 60 },
          },
        })
          .jpeg({ quality: 90 })
          .toBuffer(),
      );
    }
    const pairs = Array.from({ length: PHOTOS }, (_, i) => ({ image: photos[i % 2], caption: `photo number ${i}` }));
    const small = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#4080c0' } })
      .png()
      .toBuffer();
    const dataset = await uploadPairs(ft, 'photos', pairs);
    await timed(embed, 'EmbedImage', { images: [small] });

    const phase = async (
      running: () => boolean,
    ): Promise<{ health: number[]; embed: number[]; loop: { p99: number; max: number } }> => {
      await loopDelay(server.metricsPort); // resets the server's event-loop delay histogram
      const end = performance.now() + PHASE_MS;
      const done = () => performance.now() > end || !running();
      const [h, e] = await Promise.all([
        sample(done, () => timed(health, 'Check', { service: '' }), 50),
        sample(done, () => timed(embed, 'EmbedImage', { images: [small] }), 100),
      ]);
      return { health: h, embed: e, loop: await loopDelay(server.metricsPort) };
    };
    const quiet = await phase(() => true);
    const { job: created } = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: dataset.id,
      method: 'adapter',
      hyperparameters: {
        epochs: 2,
        batchSize: 4,
        validationSplit: 0.25,
        seed: 1,
        colorJitter: [0.2, 0.2, 0.1, 0],
        colorJitterProb: 1,
        grayscaleProb: 0.5,
      },
    });
    let state = 'FINE_TUNE_JOB_STATE_QUEUED';
    const poll = (async () => {
      while (!/SUCCEEDED|FAILED|CANCELLED/.test(state)) {
        state = (await unary(ft, 'GetFineTuneJob', { jobId: created.id })).job.state;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    // Measure while the job validates and computes features (its heavy part).
    const busy = await phase(() => !/SUCCEEDED|FAILED|CANCELLED/.test(state));
    await poll;
    const job = await waitForJob(ft, created.id, (j) => /SUCCEEDED|FAILED|CANCELLED/.test(j.state), 600_000);

    const row = (name: string, q: number[], b: number[]) =>
      `${name.padEnd(20)} quiet p50 ${pct(q, 50).toFixed(1).padStart(6)} p99 ${pct(q, 99).toFixed(1).padStart(6)} | job running p50 ${pct(b, 50).toFixed(1).padStart(6)} p99 ${pct(b, 99).toFixed(1).padStart(6)} ms (n=${q.length}/${b.length})`;
    console.log(
      [
        `fine-tune isolation (${PHOTOS} photos of 4032x3024, ${(photos[0].length / 2 ** 20).toFixed(1)} MiB JPEG each, augmentation on):`,
        row('grpc health Check', quiet.health, busy.health),
        row('EmbedImage (64x48)', quiet.embed, busy.embed),
        `server event-loop delay (its own monitor) quiet p99 ${quiet.loop.p99.toFixed(1)} max ${quiet.loop.max.toFixed(1)} | job running p99 ${busy.loop.p99.toFixed(1)} max ${busy.loop.max.toFixed(1)} ms`,
        `job ${job.state}${job.error ? `: ${JSON.stringify(job.error)}` : ''}; server RSS ${(server.rssBytes() / 2 ** 20).toFixed(0)} MiB`,
      ].join('\n'),
    );

    // The job succeeds: augmented 12 MP photos are no longer re-encoded past the image limit.
    expect(job.error).toBeNull();
    expect(job.state).toBe('FINE_TUNE_JOB_STATE_SUCCEEDED');
    expect(busy.health.length).toBeGreaterThan(0);
    expect(busy.health.every(Number.isFinite)).toBe(true);
    expect(busy.embed.every(Number.isFinite)).toBe(true);
    // Orders of magnitude only: before, the health check stalled for tens of seconds.
    expect(pct(busy.health, 99)).toBeLessThan(2000);
    expect(busy.loop.max).toBeLessThan(5000);
    expect(pct(busy.embed, 50)).toBeLessThan(10 * Math.max(pct(quiet.embed, 50), 20));
  }, 600_000);
});
