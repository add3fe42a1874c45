/**
 * Issue 13, "what must hold": under a concurrent mix of hostile but well-formed traffic —
 * decompression-bomb WebPs and PNGs, a 50,000,000×1 PNG, requests of 256 texts of 16 KB, and
 * decodes whose deadline passes mid-way — the gRPC health check and /readyz keep answering within
 * 100 ms p99, and a well-behaved caller's median latency at most doubles. Runs `clipserve serve`
 * as a child process over loopback, measures a quiet phase and a hostile phase side by side, and
 * prints the figures (docs/reliability.md quotes them). Asserts only generous orders of magnitude:
 * CI is a loaded 2-core machine.
 *
 * The attackers and the well-behaved caller hold different API keys (hostile but authenticated):
 * the batchers schedule callers in turns and cap one caller's share of each queue, so the
 * attackers' floods queue behind themselves. The server's own histograms (queue wait, preprocess,
 * inference per modality) are printed per phase to show where a call's time goes.
 */
import * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import sharp from 'sharp';
import { PROTO_DIR } from '../../server/src/util/paths';
import { seededRandom } from '../../server/src/util/random';
import { declaredPng, declaredWebp } from '../helpers/hostile-images';
import { loopDelay, pct, scrapeMetrics } from '../helpers/probes';
import { ServerProcess, StartProcessOptions, startServerProcess } from '../helpers/server-process';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const OPTS = { defaults: true, oneofs: true, enums: String, longs: Number };
const api = grpc.loadPackageDefinition(
  protoLoader.loadSync(['clipserve/v1/embedding.proto'], { includeDirs: [PROTO_DIR], ...OPTS }),
) as Any;
const healthApi = grpc.loadPackageDefinition(protoLoader.loadSync(HEALTH_PROTO, OPTS)) as Any;

const PHASE_MS = Number(process.env.HARDENING_PHASE_MS ?? 6000);
/** Extra `clipserve serve` flags for the measured server, e.g. a per-caller rate (see docs/reliability.md). */
const EXTRA_SERVE_ARGS = (process.env.HARDENING_SERVE_ARGS ?? '').split(/\s+/).filter(Boolean);
const TENANT_KEY = 'tenant-key-0123456789abcdef';
const ATTACKER_KEY = 'attacker-key-0123456789abcdef';

function bearer(key: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

function call(
  client: Any,
  method: string,
  req: unknown,
  deadlineMs = 30_000,
): Promise<{ code: grpc.status; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) =>
    client[method](req, bearer(TENANT_KEY), { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null) =>
      resolve({ code: err ? err.code : grpc.status.OK, ms: performance.now() - t0 }),
    ),
  );
}

/** The server's batcher histograms (sums and counts by modality), to diff across a phase. */
async function scrapeHistograms(port: number): Promise<Record<string, number>> {
  const text = await scrapeMetrics(port);
  const out: Record<string, number> = {};
  for (const m of text.matchAll(
    /^clipserve_(queue_wait|preprocess|inference)_seconds_(sum|count)\{modality="(\w+)"\} (\S+)$/gm,
  ))
    out[`${m[1]} ${m[3]} ${m[2]}`] = Number(m[4]);
  for (const m of text.matchAll(
    /^clipserve_rejected_items_total\{modality="(\w+)",reason="(key_share|caller_limit)"\} (\S+)$/gm,
  ))
    out[`${m[2]} ${m[1]}`] = Number(m[3]);
  return out;
}

/** Mean milliseconds per item of each histogram over a phase: where the time went. */
function breakdown(before: Record<string, number>, after: Record<string, number>): string {
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
  const parts: string[] = [];
  for (const modality of ['image', 'text']) {
    const mean = (h: string) =>
      ((1000 * d(`${h} ${modality} sum`)) / Math.max(1, d(`${h} ${modality} count`))).toFixed(1);
    parts.push(
      `${modality}: queue wait ${mean('queue_wait')} / preprocess ${mean('preprocess')} / inference run ${mean('inference')} ms (runs ${d(`inference ${modality} count`)}), key_share refusals ${d(`key_share ${modality}`)}, caller_limit refusals ${d(`caller_limit ${modality}`)}`,
    );
  }
  return parts.join('; ');
}

function readyz(port: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/readyz', timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? performance.now() - t0 : Infinity));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(Infinity));
  });
}

/** Runs fn back to back until `until`, collecting its results. */
async function loop<T>(until: () => boolean, fn: () => Promise<T>, pauseMs = 0): Promise<T[]> {
  const out: T[] = [];
  while (!until()) {
    out.push(await fn());
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
  return out;
}

type Codes = Record<string, Record<number, number>>;

/** The hostile callers, closed loop each, in a worker thread; resolves with their status codes. */
function runAttackers(
  port: number,
  ms: number,
  payloads: { bombs: Buffer[]; wide: Buffer[]; texts: string[]; photos: Buffer[] },
): Promise<Codes> {
  const source = `
    const { workerData, parentPort } = require('node:worker_threads');
    const grpc = require('@grpc/grpc-js');
    const protoLoader = require('@grpc/proto-loader');
    const { port, ms, protoDir, payloads, key } = workerData;
    const api = grpc.loadPackageDefinition(protoLoader.loadSync(['clipserve/v1/embedding.proto'], { includeDirs: [protoDir], defaults: true, oneofs: true, enums: String, longs: Number }));
    const client = new api.clipserve.v1.EmbeddingService('127.0.0.1:' + port, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20 });
    const end = Date.now() + ms;
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer ' + key);
    const call = (method, req, deadlineMs) => new Promise((resolve) => client[method](req, md, { deadline: Date.now() + deadlineMs }, (err) => resolve(err ? err.code : 0)));
    const attacker = async (method, req, deadlineMs) => { const codes = {}; while (Date.now() < end) { const c = await call(method, req, deadlineMs); codes[c] = (codes[c] || 0) + 1; } return codes; };
    const names = ['bombs', 'wide', 'texts1', 'texts2', 'texts3', 'cancelled'];
    Promise.all([
      attacker('EmbedImage', { images: payloads.bombs }, 30000),
      attacker('EmbedImage', { images: payloads.wide }, 30000),
      attacker('EmbedText', { texts: payloads.texts }, 60000),
      attacker('EmbedText', { texts: payloads.texts }, 60000),
      attacker('EmbedText', { texts: payloads.texts }, 60000),
      attacker('EmbedImage', { images: payloads.photos }, 300),
    ]).then((all) => { client.close(); parentPort.postMessage(Object.fromEntries(all.map((c, i) => [names[i], c]))); });
  `;
  return new Promise((resolve, reject) => {
    const worker = new Worker(source, {
      eval: true,
      workerData: { port, ms, protoDir: PROTO_DIR, payloads, key: ATTACKER_KEY },
    });
    worker.once('message', (codes: Codes) => {
      resolve(codes);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

interface Served {
  server: ServerProcess;
  client: Any;
  health: Any;
}

/** `clipserve serve` with the tenant's and the attacker's keys, and a client and health client on it. */
async function serveTwoKeys(args: string[], options: Omit<StartProcessOptions, 'env'> = {}): Promise<Served> {
  const server = await startServerProcess(['--max-batch-size', '8', ...args], {
    ...options,
    env: { CLIPSERVE_API_KEYS: `${TENANT_KEY} embed tenant; ${ATTACKER_KEY} embed attacker` },
  });
  const client = new api.clipserve.v1.EmbeddingService(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': 64 << 20,
  });
  const health = new healthApi.grpc.health.v1.Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  return { server, client, health };
}

async function stopServed(s: Partial<Served>): Promise<void> {
  s.client?.close();
  s.health?.close();
  await s.server?.stop();
}

interface Phase {
  health: number[];
  ready: number[];
  image: number[];
  text: number[];
  /** The well-behaved calls that did not succeed (refused, failed). */
  failed: number;
}

describe('isolation under hostile traffic (loopback, clipserve serve)', () => {
  let server: ServerProcess;
  let client: Any;
  let health: Any;
  beforeAll(async () => {
    // HARDENING_SERVER_NODE_FLAGS gives the server's node flags, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it.
    const nodeFlags = process.env.HARDENING_SERVER_NODE_FLAGS;
    const wrap = nodeFlags ? ['sh', '-c', `exec "$0" ${nodeFlags} "$@"`] : undefined;
    ({ server, client, health } = await serveTwoKeys(EXTRA_SERVE_ARGS, { wrap }));
  }, 180_000);
  afterAll(() => stopServed({ server, client, health }));

  test('health and /readyz stay fast and a well-behaved caller keeps its latency', async () => {
    const small = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#4080c0' } })
      .png()
      .toBuffer();
    const photo = await sharp({
      create: {
        width: 2000,
        height: 1500,
        channels: 3,
        background: '#000000',
        noise: { type: 'gaussian', mean: 128, sigma: 40 },
      },
    })
      .jpeg()
      .toBuffer();
    const bombs = Array.from({ length: 8 }, (_, i) => (i % 2 ? declaredWebp(7000, 7000) : declaredPng(50_000, 50_000)));
    const wide = [declaredPng(50_000_000, 1)];
    const photos = Array.from({ length: 8 }, () => photo);
    const rand = seededRandom(1313);
    const longText = () =>
      Array.from({ length: 16_384 }, () =>
        rand() < 0.5 ? String.fromCharCode(97 + Math.floor(rand() * 26)) : 'Ã©'[Math.floor(rand() * 2)],
      ).join('');
    const texts = Array.from({ length: 256 }, longText);

    // Warm up the model and the pool (the tokenizer loads in each worker on first use).
    await call(client, 'EmbedImage', { images: [small] });
    await call(client, 'EmbedText', { texts: ['warm up'] });

    const measure = async (
      hostile: boolean,
    ): Promise<{ phase: Phase; codes: Codes; loop: { p99: number; max: number }; where: string }> => {
      const before = await scrapeHistograms(server.metricsPort);
      await loopDelay(server.metricsPort); // resets the server's event-loop delay histogram
      const end = performance.now() + PHASE_MS;
      const done = () => performance.now() > end;
      const probes = Promise.all([
        loop(
          done,
          () =>
            call(health, 'Check', { service: '' }, 10_000).then((r) => (r.code === grpc.status.OK ? r.ms : Infinity)),
          50,
        ),
        loop(done, () => readyz(server.metricsPort), 50),
      ]);
      const wellBehaved = Promise.all([
        loop(done, () => call(client, 'EmbedImage', { images: [small] }), 100),
        loop(done, () => call(client, 'EmbedText', { texts: ['a photo of a cat'] }), 100),
      ]);
      // The attackers run in a worker thread with their own gRPC client: encoding their 4 MB
      // messages must not delay this thread's probes (that would measure the client, not the server).
      const attacks = hostile
        ? runAttackers(server.port, PHASE_MS, { bombs, wide, texts, photos })
        : Promise.resolve({});
      const [[h, r], [img, txt], codes] = await Promise.all([probes, wellBehaved, attacks]);
      const ok = (xs: { code: grpc.status; ms: number }[]) =>
        xs.filter((x) => x.code === grpc.status.OK).map((x) => x.ms);
      const loopFigures = await loopDelay(server.metricsPort);
      const failed = [...img, ...txt].filter((x) => x.code !== grpc.status.OK).length;
      return {
        phase: { health: h, ready: r, image: ok(img), text: ok(txt), failed },
        codes,
        loop: loopFigures,
        where: breakdown(before, await scrapeHistograms(server.metricsPort)),
      };
    };

    const quiet = await measure(false);
    const hostile = await measure(true);
    const row = (name: string, q: number[], a: number[]) =>
      `${name.padEnd(22)} quiet p50 ${pct(q, 50).toFixed(1).padStart(7)} p99 ${pct(q, 99).toFixed(1).padStart(7)} | hostile p50 ${pct(a, 50).toFixed(1).padStart(7)} p99 ${pct(a, 99).toFixed(1).padStart(7)} ms (n=${q.length}/${a.length})`;
    console.log(
      [
        `isolation figures (${PHASE_MS} ms per phase, loopback, demo model, extra flags: ${EXTRA_SERVE_ARGS.join(' ') || 'none'}):`,
        row('grpc health Check', quiet.phase.health, hostile.phase.health),
        row('/readyz', quiet.phase.ready, hostile.phase.ready),
        row('EmbedImage (64x48)', quiet.phase.image, hostile.phase.image),
        row('EmbedText (1 short)', quiet.phase.text, hostile.phase.text),
        `server event-loop delay (its own monitor)  quiet p99 ${quiet.loop.p99.toFixed(1)} max ${quiet.loop.max.toFixed(1)} | hostile p99 ${hostile.loop.p99.toFixed(1)} max ${hostile.loop.max.toFixed(1)} ms`,
        `well-behaved p50 hostile/quiet: EmbedImage ${(pct(hostile.phase.image, 50) / pct(quiet.phase.image, 50)).toFixed(1)}x, EmbedText ${(pct(hostile.phase.text, 50) / pct(quiet.phase.text, 50)).toFixed(1)}x (target <= 2x)`,
        `well-behaved calls not OK: quiet ${quiet.phase.failed}, hostile ${hostile.phase.failed} (of ${hostile.phase.image.length + hostile.phase.text.length + hostile.phase.failed})`,
        `server time per item, quiet  (all callers): ${quiet.where}`,
        `server time per item, hostile (all callers): ${hostile.where}`,
        `hostile outcomes (gRPC code: count; attackers in a worker thread of the test process): ${JSON.stringify(hostile.codes)}`,
        `server RSS ${(server.rssBytes() / 2 ** 20).toFixed(0)} MiB`,
      ].join('\n'),
    );

    // Every probe answered; no hostile request was served as if valid.
    expect(hostile.phase.health.every(Number.isFinite)).toBe(true);
    expect(hostile.phase.ready.every(Number.isFinite)).toBe(true);
    // Refused from their image headers, or, once the attacker's invalid-call budget (on by
    // default) or a per-caller rate or in-flight limit is spent, before being read.
    const refusedCodes = [grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED];
    for (const name of ['bombs', 'wide']) {
      expect(Object.keys(hostile.codes[name]).map(Number)).toContain(grpc.status.INVALID_ARGUMENT);
      for (const code of Object.keys(hostile.codes[name]).map(Number)) expect(refusedCodes).toContain(code);
    }
    expect(Object.keys(hostile.codes.cancelled).map(Number)).toContain(grpc.status.DEADLINE_EXCEEDED);
    // The text floods are served or refused for their caller's share, never failed otherwise.
    for (const name of ['texts1', 'texts2', 'texts3']) {
      for (const code of Object.keys(hostile.codes[name]).map(Number))
        expect([grpc.status.OK, grpc.status.RESOURCE_EXHAUSTED]).toContain(code);
    }
    // Orders of magnitude only (the targets, 100 ms p99 and at most 2× median, are measured above).
    expect(pct(hostile.phase.health, 99)).toBeLessThan(1000);
    expect(pct(hostile.phase.ready, 99)).toBeLessThan(1000);
    // The event loop itself was never held for whole seconds (it used to be for 5 s and more).
    expect(hostile.loop.max).toBeLessThan(5000);
    // The well-behaved caller is served, not refused for the attackers' floods (its own key has
    // nothing queued, so neither the turns nor the shares stand in its way).
    expect(quiet.phase.failed).toBe(0);
    expect(hostile.phase.failed).toBeLessThanOrEqual(
      Math.ceil((hostile.phase.image.length + hostile.phase.text.length) / 10),
    );
    expect(hostile.phase.image.length).toBeGreaterThan(0);
    expect(hostile.phase.text.length).toBeGreaterThan(0);
    expect(pct(hostile.phase.image, 50)).toBeLessThan(10 * Math.max(pct(quiet.phase.image, 50), 20));
    expect(pct(hostile.phase.text, 50)).toBeLessThan(10 * Math.max(pct(quiet.phase.text, 50), 20));
    // Still alive and serving.
    const after = await call(client, 'EmbedImage', { images: [small] });
    expect({ code: after.code, ms: Math.round(after.ms) }).toEqual({ code: grpc.status.OK, ms: expect.any(Number) });
  }, 240_000);
});

describe('a caller over its rate or calls in flight is refused from its headers, its message never decoded', () => {
  let server: ServerProcess;
  let client: Any;
  let health: Any;
  const RATE = 20;
  const CONCURRENCY = 2;
  const refusalLines: Record<string, unknown>[] = [];
  beforeAll(async () => {
    const limits = [
      '--caller-rate',
      String(RATE),
      '--caller-burst',
      String(RATE),
      '--caller-concurrency',
      String(CONCURRENCY),
    ];
    ({ server, client, health } = await serveTwoKeys(limits, {
      onRecord: (rec) => {
        if (rec.msg === 'call refused by per-caller admission') refusalLines.push(rec);
      },
    }));
  }, 180_000);
  afterAll(() => stopServed({ server, client, health }));

  const callAs = (
    key: string,
    method: string,
    req: unknown,
  ): Promise<{ code: grpc.status; details: string; ms: number }> => {
    const t0 = performance.now();
    return new Promise((resolve) =>
      client[method](req, bearer(key), { deadline: Date.now() + 60_000 }, (err: grpc.ServiceError | null) =>
        resolve({ code: err ? err.code : grpc.status.OK, details: err?.details ?? '', ms: performance.now() - t0 }),
      ),
    );
  };
  const callerLimitRefusals = async (): Promise<number> => {
    const text = await scrapeMetrics(server.metricsPort);
    return Number(
      /^clipserve_rejected_items_total\{modality="text",reason="caller_limit"\} (\S+)$/m.exec(text)?.[1] ?? NaN,
    );
  };

  test('40 concurrent 6 MB EmbedText calls: all but its in-flight allowance refused at once; health and another caller unaffected', async () => {
    const rand = seededRandom(1331);
    const texts = Array.from({ length: 256 }, () =>
      Array.from({ length: 16_384 }, () =>
        rand() < 0.5 ? String.fromCharCode(97 + Math.floor(rand() * 26)) : 'Ã©'[Math.floor(rand() * 2)],
      ).join(''),
    );
    expect((await callAs(TENANT_KEY, 'EmbedText', { texts: ['warm up'] })).code).toBe(grpc.status.OK);
    const refusedBefore = await callerLimitRefusals();
    await loopDelay(server.metricsPort); // resets the server's event-loop delay histogram
    let flooding = true;
    const probes = loop(
      () => !flooding,
      () => call(health, 'Check', { service: '' }, 10_000).then((r) => (r.code === grpc.status.OK ? r.ms : Infinity)),
      20,
    );
    const flood = await Promise.all(Array.from({ length: 40 }, () => callAs(ATTACKER_KEY, 'EmbedText', { texts })));
    const tenant = await callAs(TENANT_KEY, 'EmbedText', { texts: ['a photo of a cat'] });
    flooding = false;
    const healthMs = await probes;
    const loopFigures = await loopDelay(server.metricsPort);
    const refused = flood.filter((r) => r.code === grpc.status.RESOURCE_EXHAUSTED);
    const served = flood.filter((r) => r.code === grpc.status.OK);
    // Rate-limited log: a handful of lines for dozens of refusals.
    const lines = refusalLines.splice(0);
    console.log(
      [
        `per-caller admission (--caller-rate ${RATE} --caller-burst ${RATE} --caller-concurrency ${CONCURRENCY}), 40 concurrent EmbedText of 256 × 16,384 chars (6.3 MB each), one key:`,
        `  served ${served.length} (p50 ${pct(
          served.map((r) => r.ms),
          50,
        ).toFixed(0)} ms), refused ${refused.length} (RESOURCE_EXHAUSTED, p50 ${pct(
          refused.map((r) => r.ms),
          50,
        ).toFixed(0)} ms, max ${pct(
          refused.map((r) => r.ms),
          100,
        ).toFixed(0)} ms, as seen by a client that also encodes the 40 messages)`,
        `  health Check during the flood p50 ${pct(healthMs, 50).toFixed(1)} p99 ${pct(healthMs, 99).toFixed(1)} ms (n=${healthMs.length}); server event-loop delay p99 ${loopFigures.p99.toFixed(1)} max ${loopFigures.max.toFixed(1)} ms`,
        `  log lines for the refusals: ${lines.length}; another key's call meanwhile: ${grpc.status[tenant.code]} in ${tenant.ms.toFixed(0)} ms`,
      ].join('\n'),
    );
    expect(served.length + refused.length).toBe(40);
    expect(served.length).toBeGreaterThanOrEqual(CONCURRENCY);
    expect(refused.length).toBeGreaterThanOrEqual(30);
    for (const r of refused)
      expect(r.details).toMatch(
        /calls in flight, the most allowed \(--caller-concurrency 2\)|exceeds its rate of 20 calls per second/,
      );
    expect((await callerLimitRefusals()) - refusedBefore).toBe(refused.length);
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(4);
    expect(lines[0]).toMatchObject({
      caller: 'key:attacker',
      reason: 'caller_limit',
      method: '/clipserve.v1.EmbeddingService/EmbedText',
    });
    expect(tenant.code).toBe(grpc.status.OK);
    expect(healthMs.every(Number.isFinite)).toBe(true);
    // Orders of magnitude only: decoding and tokenizing 38 refused messages would hold the loop for seconds.
    expect(loopFigures.max).toBeLessThan(2000);
  }, 180_000);

  test('a caller looping past its rate is refused with the time to wait, and admitted again at its rate', async () => {
    await new Promise((r) => setTimeout(r, 2000)); // the bucket refills (burst / rate = 1 s) and flood calls finish
    const results: { code: grpc.status; details: string }[] = [];
    const t0 = performance.now();
    while (performance.now() - t0 < 2000) results.push(await callAs(ATTACKER_KEY, 'EmbedText', { texts: ['x'] }));
    const ok = results.filter((r) => r.code === grpc.status.OK).length;
    const limited = results.filter((r) => r.code === grpc.status.RESOURCE_EXHAUSTED);
    console.log(
      `rate loop: ${results.length} sequential calls in 2 s, ${ok} served, ${limited.length} refused (burst ${RATE}, then ${RATE}/s)`,
    );
    expect(limited.length).toBeGreaterThan(0);
    for (const r of limited)
      expect(r.details).toMatch(/exceeds its rate of 20 calls per second \(burst 20\); retry in \d+ ms/);
    // Burst plus two seconds at the rate, with room for a slow machine either way.
    expect(ok).toBeGreaterThanOrEqual(RATE);
    expect(ok).toBeLessThanOrEqual(RATE + 3 * RATE);
    // The other key was never in this caller's bucket.
    expect((await callAs(TENANT_KEY, 'EmbedText', { texts: ['y'] })).code).toBe(grpc.status.OK);
  }, 60_000);
});
