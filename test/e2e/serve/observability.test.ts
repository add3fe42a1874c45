/**
 * Observability end to end: the real server (startServer, tiny demo model) on 127.0.0.1:0 takes a
 * known set of calls, some failing; then
 *   - its /metrics scrape passes `promtool check metrics` and every counter has the exact value
 *     those calls imply;
 *   - a real Prometheus (127.0.0.1, free port, temp storage, 1 s scrape interval) scrapes it and a
 *     PromQL query through its HTTP API returns the call counts by method and code;
 *   - every Grafana dashboard query names only exported metrics and runs in that Prometheus.
 * Without promtool/prometheus the tool checks skip loudly, or fail when CI is set.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import sharp from 'sharp';
import { RunningServer } from '../../../server/src/serve/server';
import { embeddingClient } from '../../helpers/clients';
import { startTestServer } from '../../helpers/server';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SERVICE = 'clipserve.v1.EmbeddingService';
const QUEUE_BOUND = 64;

function which(tool: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
const PROMTOOL = which('promtool');
const PROMETHEUS = which('prometheus');

/** A check that needs an external tool: runs when it is installed, skips loudly without it, and
 *  fails in CI (where .ci/prometheus.sh installs it). */
function itWithTool(
  tool: string | undefined,
  toolName: string,
  name: string,
  fn: () => Promise<void>,
  timeout?: number,
): void {
  if (tool) {
    it(name, fn, timeout);
  } else if (process.env.CI) {
    it(name, () => {
      throw new Error(`${toolName} not found on PATH although CI is set; run .ci/prometheus.sh`);
    });
  } else {
    console.warn(
      `\n!!! SKIPPING "${name}": ${toolName} not found (apt-get install prometheus, or .ci/prometheus.sh) !!!\n`,
    );
    it.skip(name, fn);
  }
}

// ---- Prometheus text exposition, parsed just enough to read values ------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Scrape {
  text: string;
  families: Map<string, string>;
  samples: Sample[];
}

function parseLabels(body: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const m of body.matchAll(re))
    labels[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
  return labels;
}

function parseScrape(text: string): Scrape {
  const families = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      families.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    samples.push({ name: m[1], labels: m[2] ? parseLabels(m[2]) : {}, value: Number(m[3]) });
  }
  return { text, families, samples };
}

/** The single sample of `name` whose labels are exactly `labels` (plus none other). */
function valueOf(scrape: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = scrape.samples.filter(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value;
}

/** Every sample name the scrape can answer for: families, plus histogram/summary parts. */
function exportedNames(scrape: Scrape): Set<string> {
  const names = new Set<string>();
  for (const [family, type] of scrape.families) {
    names.add(family);
    if (type === 'histogram') ['_bucket', '_sum', '_count'].forEach((s) => names.add(family + s));
    if (type === 'summary') ['_sum', '_count'].forEach((s) => names.add(family + s));
  }
  return names;
}

// ---- PromQL: the metric names an expression selects ---------------------------------------------

const PROMQL_KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

function metricNamesIn(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""'); // string literals
  s = s.replace(/\{[^}]*\}/g, ' '); // label matchers
  s = s.replace(/\[[^\]]*\]/g, ' '); // ranges, subqueries
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const start = m.index ?? 0;
    if (start > 0 && /[0-9.]/.test(s[start - 1])) continue; // part of a number (1e3) or duration
    if (/^\s*\(/.test(s.slice(start + m[0].length))) continue; // a function or aggregation
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

// ---- HTTP, gRPC and process helpers --------------------------------------------------------------

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(250);
  }
}

interface PromServer {
  url: string;
  stop(): Promise<void>;
}

async function startPrometheus(targetPort: number): Promise<PromServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-prom-'));
  const port = await freePort();
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: clipserve',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${targetPort}']`,
      '',
    ].join('\n'),
  );
  let log = '';
  const child: ChildProcess = spawn(
    PROMETHEUS!,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (d) => {
    log += String(d);
  });
  child.stderr?.on('data', (d) => {
    log += String(d);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until('Prometheus to be ready', 20_000, async () => {
      if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${log}`);
      return (await httpGet(`${url}/-/ready`)).status === 200 ? true : undefined;
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, stop };
}

interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

async function promQuery(prom: PromServer, query: string): Promise<PromResult[]> {
  const res = await httpGet(`${prom.url}/api/v1/query?query=${encodeURIComponent(query)}`);
  const body = JSON.parse(res.body) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: PromResult[] };
  };
  if (body.status !== 'success') throw new Error(`query failed: ${body.error ?? res.body}\n  ${query}`);
  return body.data!.resultType === 'vector' ? body.data!.result : [];
}

type Client = grpc.Client & Record<string, (...args: any[]) => any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A unary call; resolves with its status code and response headers instead of throwing. */
function call(
  client: Client,
  method: string,
  req: object,
  md = new grpc.Metadata(),
): Promise<{ code: number; headers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    const c = client[method](req, md, {}, (err: grpc.ServiceError | null) =>
      resolve({ code: err ? err.code : grpc.status.OK, headers }),
    );
    c.on('metadata', (m: grpc.Metadata) => {
      headers = m;
    });
  });
}

function captureLogs(): { logger: pino.Logger; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return {
    logger: pino({ level: 'info' }, sink),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

// ---- the test ----------------------------------------------------------------------------------

/** What the calls below must produce, per method: [grpc_type, {code: count}, received, sent]. */
const EXPECTED: Record<string, { type: string; codes: Record<string, number>; received: number; sent: number }> = {
  EmbedText: { type: 'unary', codes: { OK: 3, InvalidArgument: 2, NotFound: 1 }, received: 6, sent: 3 },
  EmbedImage: { type: 'unary', codes: { OK: 2, InvalidArgument: 1 }, received: 3, sent: 2 },
  GetModelInfo: { type: 'unary', codes: { OK: 1 }, received: 1, sent: 1 },
  EmbedStream: { type: 'bidi_stream', codes: { OK: 1 }, received: 3, sent: 3 },
  Similarity: { type: 'unary', codes: {}, received: 0, sent: 0 },
  Rank: { type: 'unary', codes: {}, received: 0, sent: 0 },
  Classify: { type: 'unary', codes: {}, received: 0, sent: 0 },
};
const ALL_CODES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'Unauthenticated',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
];
// 2 texts per successful EmbedText call, plus the stream's 2 texts; 2 good images; 2 undecodable images.
const TEXTS_EMBEDDED = 3 * 2 + 2;
const IMAGES_EMBEDDED = 2;
const BAD_IMAGES = 2;

describe('observability of the real server', () => {
  let server: RunningServer;
  let client: Client;
  let logs: ReturnType<typeof captureLogs>;
  let scrape: Scrape;
  let prom: PromServer | undefined;
  const metricsUrl = () => `http://127.0.0.1:${server.metricsPort}`;

  beforeAll(async () => {
    logs = captureLogs();
    server = await startTestServer({
      maxBatchSize: 8,
      maxQueueDelayMs: 5,
      queueBound: QUEUE_BOUND,
      maxItemsPerRequest: 8,
      logger: logs.logger,
    });
    client = embeddingClient(server.port).raw as unknown as Client;
    if (PROMETHEUS) prom = await startPrometheus(server.metricsPort);

    const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 200, g: 30, b: 90 } } })
      .png()
      .toBuffer();
    const garbage = Buffer.from('definitely not an image');
    const expectCode = async (p: Promise<{ code: number }>, code: number) => expect((await p).code).toBe(code);

    for (let i = 0; i < 3; i++)
      await expectCode(call(client, 'EmbedText', { texts: ['a photo of a cat', 'a diagram'] }), grpc.status.OK);
    for (let i = 0; i < 2; i++)
      await expectCode(call(client, 'EmbedText', { texts: [] }), grpc.status.INVALID_ARGUMENT);
    await expectCode(
      call(client, 'EmbedText', { texts: ['x'], modelVersion: 'not-the-served-version' }),
      grpc.status.NOT_FOUND,
    );
    for (let i = 0; i < 2; i++) await expectCode(call(client, 'EmbedImage', { images: [png] }), grpc.status.OK);
    await expectCode(call(client, 'EmbedImage', { images: [garbage] }), grpc.status.INVALID_ARGUMENT);
    await expectCode(call(client, 'GetModelInfo', {}), grpc.status.OK);

    const stream = client.EmbedStream();
    const streamDone = new Promise<{ code: number; results: number }>((resolve) => {
      let results = 0;
      stream.on('data', () => {
        results++;
      });
      stream.on('error', () => {
        /* status carries the code */
      });
      stream.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, results }));
    });
    stream.write({ id: 't1', text: 'a red square' });
    stream.write({ id: 't2', text: 'a blue circle' });
    stream.write({ id: 'bad', image: garbage });
    stream.end();
    expect(await streamDone).toEqual({ code: grpc.status.OK, results: 3 });

    // The server ends its side of a call just after the client sees the status.
    await sleep(100);
    scrape = parseScrape((await httpGet(`${metricsUrl()}/metrics`)).body);
  }, 90_000);

  afterAll(async () => {
    await prom?.stop();
    client?.close();
    await server?.shutdown(0);
  });

  it('serves the probes on the metrics port', async () => {
    expect((await httpGet(`${metricsUrl()}/healthz`)).status).toBe(200);
    const ready = await httpGet(`${metricsUrl()}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true, reason: 'ok' });
  });

  itWithTool(PROMTOOL, 'promtool', 'the scrape after traffic passes promtool check metrics', async () => {
    const r = spawnSync(PROMTOOL!, ['check', 'metrics'], { input: scrape.text, encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  });

  it('has the exact gRPC counts the calls imply', () => {
    for (const [method, exp] of Object.entries(EXPECTED)) {
      const labels = { grpc_type: exp.type, grpc_service: SERVICE, grpc_method: method };
      const calls = Object.values(exp.codes).reduce((a, b) => a + b, 0);
      expect([method, valueOf(scrape, 'grpc_server_started_total', labels)]).toEqual([method, calls]);
      for (const code of ALL_CODES) {
        expect([method, code, valueOf(scrape, 'grpc_server_handled_total', { ...labels, grpc_code: code })]).toEqual([
          method,
          code,
          exp.codes[code] ?? 0,
        ]);
      }
      expect([method, valueOf(scrape, 'grpc_server_msg_received_total', labels)]).toEqual([method, exp.received]);
      expect([method, valueOf(scrape, 'grpc_server_msg_sent_total', labels)]).toEqual([method, exp.sent]);
      expect([method, valueOf(scrape, 'grpc_server_handling_seconds_count', labels)]).toEqual([method, calls]);
      expect(valueOf(scrape, 'grpc_server_handling_seconds_bucket', { ...labels, le: '+Inf' })).toBe(calls);
    }
  });

  it('has the exact service counts the calls imply', () => {
    const m = (modality: string) => ({ modality });
    expect(valueOf(scrape, 'clipserve_items_embedded_total', m('text'))).toBe(TEXTS_EMBEDDED);
    expect(valueOf(scrape, 'clipserve_items_embedded_total', m('image'))).toBe(IMAGES_EMBEDDED);
    for (const modality of ['text', 'image']) {
      const embedded = modality === 'text' ? TEXTS_EMBEDDED : IMAGES_EMBEDDED;
      // Every embedded item was in exactly one batch and waited in the queue exactly once.
      expect(valueOf(scrape, 'clipserve_batch_size_sum', m(modality))).toBe(embedded);
      expect(valueOf(scrape, 'clipserve_queue_wait_seconds_count', m(modality))).toBe(embedded);
      const batches = valueOf(scrape, 'clipserve_batch_size_count', m(modality))!;
      expect(batches).toBeGreaterThanOrEqual(1);
      expect(batches).toBeLessThanOrEqual(embedded);
      expect(valueOf(scrape, 'clipserve_inference_seconds_count', m(modality))).toBe(batches);
      expect(valueOf(scrape, 'clipserve_queue_depth', m(modality))).toBe(0);
      expect(valueOf(scrape, 'clipserve_queue_capacity', m(modality))).toBe(QUEUE_BOUND);
    }
    // Preparation is timed for every item, including the images that fail to decode.
    expect(valueOf(scrape, 'clipserve_preprocess_seconds_count', m('text'))).toBe(TEXTS_EMBEDDED);
    expect(valueOf(scrape, 'clipserve_preprocess_seconds_count', m('image'))).toBe(IMAGES_EMBEDDED + BAD_IMAGES);
    for (const modality of ['text', 'image']) {
      for (const reason of ['bad_image', 'too_large', 'overload', 'deadline', 'cancelled']) {
        const want = modality === 'image' && reason === 'bad_image' ? BAD_IMAGES : 0;
        expect([modality, reason, valueOf(scrape, 'clipserve_rejected_items_total', { modality, reason })]).toEqual([
          modality,
          reason,
          want,
        ]);
      }
    }
    const info = server.model.info;
    expect(
      valueOf(scrape, 'clipserve_model_info', {
        name: info.name,
        version: info.version,
        provider: info.provider,
        demo: String(info.demo),
        precision: info.precision,
      }),
    ).toBe(1);
    expect(scrape.samples.filter((s) => s.name === 'clipserve_model_info')).toHaveLength(1);
    expect(valueOf(scrape, 'clipserve_model_load_seconds')).toBeGreaterThan(0);
    expect(valueOf(scrape, 'clipserve_ready')).toBe(1);
    // Nobody reported fine-tune jobs, so there is no made-up number.
    expect(scrape.families.get('clipserve_finetune_jobs')).toBe('gauge');
    expect(scrape.samples.filter((s) => s.name === 'clipserve_finetune_jobs')).toEqual([]);
    expect(valueOf(scrape, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(scrape.families.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
  });

  it('logs one JSON line per call with its request id and no payload', () => {
    const lines = logs.lines().filter((l) => l.msg === 'rpc finished');
    const calls = Object.values(EXPECTED).reduce((a, e) => a + Object.values(e.codes).reduce((x, y) => x + y, 0), 0);
    expect(lines).toHaveLength(calls);
    expect(new Set(lines.map((l) => l.requestId)).size).toBe(calls);
    const all = JSON.stringify(logs.lines());
    expect(all).not.toContain('a photo of a cat');
    expect(all).not.toContain('a blue circle');
  });

  it("echoes the caller's request id", async () => {
    const md = new grpc.Metadata();
    md.set('x-request-id', 'obs-e2e-42');
    const res = await call(client, 'GetModelInfo', {}, md);
    expect(res.headers?.get('x-request-id')).toEqual(['obs-e2e-42']);
    expect(logs.lines().some((l) => l.requestId === 'obs-e2e-42' && l.grpcMethod === 'GetModelInfo')).toBe(true);
  });

  itWithTool(
    PROMETHEUS,
    'prometheus',
    'Prometheus scrapes it and PromQL returns the call counts by method and code',
    async () => {
      const expected = new Map<string, number>();
      for (const [method, exp] of Object.entries(EXPECTED)) {
        for (const [code, n] of Object.entries(exp.codes)) expected.set(`${method}/${code}`, n);
      }
      // The 'echoes' test adds one more GetModelInfo OK when it ran first; read the live count.
      expected.set(
        'GetModelInfo/OK',
        valueOf(parseScrape((await httpGet(`${metricsUrl()}/metrics`)).body), 'grpc_server_handled_total', {
          grpc_type: 'unary',
          grpc_service: SERVICE,
          grpc_method: 'GetModelInfo',
          grpc_code: 'OK',
        })!,
      );
      const query = `sum by (grpc_method, grpc_code) (grpc_server_handled_total{job="clipserve", grpc_service="${SERVICE}"}) > 0`;
      const got = await until('Prometheus to hold the call counts', 30_000, async () => {
        const result = await promQuery(prom!, query);
        const counts = new Map(
          result.map((r) => [`${r.metric.grpc_method}/${r.metric.grpc_code}`, Number(r.value[1])]),
        );
        const same = counts.size === expected.size && [...expected].every(([k, v]) => counts.get(k) === v);
        return same ? counts : undefined;
      });
      expect(Object.fromEntries(got)).toEqual(Object.fromEntries(expected));
      const up = await promQuery(prom!, 'up{job="clipserve"}');
      expect(up.map((r) => r.value[1])).toEqual(['1']);
    },
    60_000,
  );

  describe('Grafana dashboard against the live metrics', () => {
    const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy/grafana/clipserve.json'), 'utf8')) as {
      panels: Array<{ title: string; type: string; targets?: Array<{ refId: string; expr: string }> }>;
    };
    const targets = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, ...t })));
    /** Grafana's variables, as Grafana would substitute them for this job. */
    const substitute = (expr: string) => expr.replace(/\$__rate_interval/g, '30s').replace(/\$job/g, 'clipserve');

    it('finds the metric names in PromQL (the extraction itself)', () => {
      expect(metricNamesIn('histogram_quantile(0.95, sum by (le, m) (rate(a_bucket{x="b{c}"}[5m])))')).toEqual([
        'a_bucket',
      ]);
      expect(metricNamesIn('sum(rate(a_total[1m])) by (job) / on (job) group_left(le) b offset 5m > 1e3')).toEqual([
        'a_total',
        'b',
      ]);
    });

    it('every panel query names only metrics clipserve exports', () => {
      const exported = exportedNames(scrape);
      for (const t of targets) {
        const names = metricNamesIn(t.expr);
        expect([t.panel, t.refId, names.length > 0]).toEqual([t.panel, t.refId, true]);
        for (const name of names) expect([t.panel, name, exported.has(name)]).toEqual([t.panel, name, true]);
      }
    });

    itWithTool(
      PROMETHEUS,
      'prometheus',
      'every panel query runs in Prometheus, with data wherever its metrics have samples',
      async () => {
        const sampled = new Set(scrape.samples.map((s) => s.name));
        // rate() over 30s needs two scrapes of every series.
        await sleep(2500);
        for (const t of targets) {
          const result = await promQuery(prom!, substitute(t.expr));
          if (metricNamesIn(t.expr).every((n) => sampled.has(n))) {
            expect([t.panel, t.refId, result.length > 0]).toEqual([t.panel, t.refId, true]);
          }
        }
      },
      60_000,
    );
  });
});
