/**
 * Unit tests of the metrics module on its own: the go-grpc-prometheus interceptor on a tiny grpc-js
 * server defined here with an inline proto (all four call types, successes and every way a call
 * can fail), the service metrics fed as the batcher would, and the probe/metrics HTTP server.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import pino from 'pino';
import type { Registry } from 'prom-client';
import {
  ClipserveMetrics,
  goCodeName,
  MetricsServerError,
  MetricsValueError,
  splitMethodPath,
  startMetricsServer,
  type MetricsHttpServer,
} from '../../../server/src/metrics';

const ECHO_PROTO = `
syntax = "proto3";
package obs.test.v1;
message Req { string text = 1; int32 count = 2; int32 delay_ms = 3; int32 fail_code = 4; }
message Resp { string text = 1; int32 index = 2; }
service Echo {
  rpc Unary(Req) returns (Resp);
  rpc ServerStream(Req) returns (stream Resp);
  rpc ClientStream(stream Req) returns (Resp);
  rpc Bidi(stream Req) returns (stream Resp);
}
`;

const SERVICE = 'obs.test.v1.Echo';
/** Text that must never show up in a log line: the logs carry no payloads. */
const PAYLOAD_MARKER = 'PAYLOAD-MUST-NOT-BE-LOGGED';

interface Req {
  text?: string;
  count?: number;
  delay_ms?: number;
  fail_code?: number;
}
interface Resp {
  text: string;
  index: number;
}

type EchoClient = grpc.Client & {
  Unary(
    req: Req,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: Resp) => void,
  ): grpc.ClientUnaryCall;
  ServerStream(req: Req, md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<Resp>;
  ClientStream(cb: (err: grpc.ServiceError | null, res?: Resp) => void): grpc.ClientWritableStream<Req>;
  Bidi(): grpc.ClientDuplexStream<Req, Resp>;
};

function loadEchoService(): { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obs-proto-'));
  try {
    const file = path.join(dir, 'echo.proto');
    fs.writeFileSync(file, ECHO_PROTO);
    const def = protoLoader.loadSync(file, { keepCase: true, defaults: true });
    const Client = (grpc.loadPackageDefinition(def) as any).obs.test.v1.Echo as grpc.ServiceClientConstructor; // eslint-disable-line @typescript-eslint/no-explicit-any
    return { service: Client.service, Client };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function failWith(code: number): grpc.ServiceError {
  return Object.assign(new Error(`failing on request with code ${code}`), {
    code,
    details: `failing with ${code}`,
    metadata: new grpc.Metadata(),
  });
}

const handlers: grpc.UntypedServiceImplementation = {
  Unary: (call: grpc.ServerUnaryCall<Req, Resp>, cb: grpc.sendUnaryData<Resp>) => {
    const { fail_code: failCode = 0, delay_ms: delay = 0, text = '' } = call.request;
    setTimeout(() => (failCode ? cb(failWith(failCode)) : cb(null, { text, index: 0 })), delay);
  },
  // grpc-js ignores a handler's result; this body awaits only timers, so it has no rejection to lose.
  // eslint-disable-next-line @typescript-eslint/no-misused-promises
  ServerStream: async (call: grpc.ServerWritableStream<Req, Resp>) => {
    const { count = 0, delay_ms: delay = 0, fail_code: failCode = 0 } = call.request;
    for (let i = 0; i < count && !call.cancelled; i++) {
      call.write({ text: 'item', index: i });
      if (delay) await sleep(delay);
    }
    if (call.cancelled) return;
    if (failCode) call.emit('error', failWith(failCode));
    else call.end();
  },
  ClientStream: (call: grpc.ServerReadableStream<Req, Resp>, cb: grpc.sendUnaryData<Resp>) => {
    let n = 0;
    call.on('data', () => {
      n++;
    });
    call.on('end', () => cb(null, { text: 'received', index: n }));
  },
  Bidi: (call: grpc.ServerDuplexStream<Req, Resp>) => {
    let i = 0;
    call.on('data', (req: Req) => call.write({ text: req.text ?? '', index: i++ }));
    call.on('end', () => call.end());
  },
};

/** Lines pino wrote, parsed. */
function captureLogs(): { logger: pino.Logger; lines: Array<Record<string, unknown>>; raw: () => string } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  return {
    logger,
    raw: () => chunks.join(''),
    get lines() {
      return chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

async function sampleValue(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  if (!metric) throw new Error(`metric ${name} not registered`);
  const hit = metric.values.find(
    (v) =>
      Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want) &&
      Object.keys(v.labels).length >= Object.keys(labels).length &&
      (v as { metricName?: string }).metricName === undefined,
  );
  return hit?.value;
}

async function seriesOf(
  registry: Registry,
  name: string,
): Promise<Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  if (!metric) throw new Error(`metric ${name} not registered`);
  return metric.values as Array<{ labels: Record<string, string | number>; value: number; metricName?: string }>;
}

/** Sum of a metric's samples whose labels include `labels`, grouped by nothing. */
async function total(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  return (await seriesOf(registry, name))
    .filter((s) => s.metricName === undefined || s.metricName === name)
    .filter((s) => Object.entries(labels).every(([k, v]) => String(s.labels[k]) === v))
    .reduce((acc, s) => acc + s.value, 0);
}

async function histogramCount(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  return (await seriesOf(registry, name))
    .filter((s) => s.metricName === `${name}_count`)
    .filter((s) => Object.entries(labels).every(([k, v]) => String(s.labels[k]) === v))
    .reduce((acc, s) => acc + s.value, 0);
}

function unary(
  client: EchoClient,
  req: Req,
  opts: grpc.CallOptions = {},
  md = new grpc.Metadata(),
): Promise<{ err: grpc.ServiceError | null; headers?: grpc.Metadata; trailers?: grpc.Metadata }> {
  return new Promise((resolve) => {
    let headers: grpc.Metadata | undefined;
    const call = client.Unary(req, md, opts, (err) => {
      // The status event can come after the callback; give it a tick.
      setImmediate(() => resolve({ err, headers, trailers }));
    });
    let trailers: grpc.Metadata | undefined;
    call.on('metadata', (m) => {
      headers = m;
    });
    call.on('status', (s) => {
      trailers = s.metadata;
    });
  });
}

function collectStream<T>(
  stream: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>,
): Promise<{ items: T[]; code: number }> {
  return new Promise((resolve) => {
    const items: T[] = [];
    stream.on('data', (d: T) => items.push(d));
    stream.on('error', () => {
      /* the status event carries the code */
    });
    stream.on('status', (s: grpc.StatusObject) => resolve({ items, code: s.code }));
  });
}

describe('Go code names and method paths', () => {
  it('prints codes as go codes.Code.String() does', () => {
    expect(goCodeName(grpc.status.OK)).toBe('OK');
    expect(goCodeName(grpc.status.CANCELLED)).toBe('Canceled');
    expect(goCodeName(grpc.status.INVALID_ARGUMENT)).toBe('InvalidArgument');
    expect(goCodeName(grpc.status.DEADLINE_EXCEEDED)).toBe('DeadlineExceeded');
    expect(goCodeName(grpc.status.RESOURCE_EXHAUSTED)).toBe('ResourceExhausted');
    expect(goCodeName(grpc.status.UNAUTHENTICATED)).toBe('Unauthenticated');
    expect(goCodeName(42)).toBe('Code(42)');
  });

  it('splits method paths like go-grpc-prometheus', () => {
    expect(splitMethodPath('/clipserve.v1.Embed/EmbedText')).toEqual(['clipserve.v1.Embed', 'EmbedText']);
    expect(splitMethodPath('noslash')).toEqual(['unknown', 'unknown']);
  });
});

describe('gRPC server interceptor (go-grpc-prometheus semantics)', () => {
  const { service, Client } = loadEchoService();
  let metrics: ClipserveMetrics;
  let server: grpc.Server;
  let client: EchoClient;
  let logs: ReturnType<typeof captureLogs>;
  const M = (method: string, type: string) => ({ grpc_service: SERVICE, grpc_method: method, grpc_type: type });

  beforeAll(async () => {
    logs = captureLogs();
    metrics = new ClipserveMetrics({ logger: logs.logger, defaultMetrics: false });
    metrics.grpc.preRegister(service);
    server = new grpc.Server({ interceptors: [metrics.grpc.interceptor], 'grpc.max_receive_message_length': 4096 });
    server.addService(service, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  });

  afterAll(async () => {
    client?.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  it('creates every method series at zero before the first call', async () => {
    const r = metrics.registry;
    expect(await sampleValue(r, 'grpc_server_started_total', M('Bidi', 'bidi_stream'))).toBe(0);
    expect(
      await sampleValue(r, 'grpc_server_handled_total', {
        ...M('ClientStream', 'client_stream'),
        grpc_code: 'Unavailable',
      }),
    ).toBe(0);
    const handledSeries = await seriesOf(r, 'grpc_server_handled_total');
    expect(handledSeries).toHaveLength(4 * 17);
    expect(await histogramCount(r, 'grpc_server_handling_seconds', M('Unary', 'unary'))).toBe(0);
  });

  it('counts every call type and every way of ending, exactly', async () => {
    // Unary: 3 OK, 2 InvalidArgument, 1 Internal, 1 deadline exceeded, 1 request over the size limit.
    for (let i = 0; i < 3; i++) expect((await unary(client, { text: PAYLOAD_MARKER })).err).toBeNull();
    for (let i = 0; i < 2; i++)
      expect((await unary(client, { fail_code: grpc.status.INVALID_ARGUMENT })).err?.code).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
    expect((await unary(client, { fail_code: grpc.status.INTERNAL })).err?.code).toBe(grpc.status.INTERNAL);
    const late = await unary(client, { delay_ms: 400 }, { deadline: Date.now() + 60 });
    expect(late.err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    const big = await unary(client, { text: 'x'.repeat(8000) });
    expect(big.err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);

    // Server streaming: one stream of 4 messages, one that fails after 2, one the client cancels.
    const ok = await collectStream(client.ServerStream({ count: 4 }));
    expect(ok).toEqual({ items: expect.any(Array), code: grpc.status.OK });
    expect(ok.items).toHaveLength(4);
    const failed = await collectStream(client.ServerStream({ count: 2, fail_code: grpc.status.UNAVAILABLE }));
    expect(failed.code).toBe(grpc.status.UNAVAILABLE);
    expect(failed.items).toHaveLength(2);
    const cancelled = client.ServerStream({ count: 1000, delay_ms: 20 });
    const cancelledDone = collectStream(cancelled);
    await new Promise<void>((resolve) => cancelled.once('data', () => resolve()));
    cancelled.cancel();
    expect((await cancelledDone).code).toBe(grpc.status.CANCELLED);

    // Client streaming: 5 messages in, one response out.
    const res = await new Promise<Resp>((resolve, reject) => {
      const up = client.ClientStream((err, r) => (err ? reject(err) : resolve(r!)));
      for (let i = 0; i < 5; i++) up.write({ text: 'part' });
      up.end();
    });
    expect(res.index).toBe(5);

    // Bidi: 3 in, 3 echoed.
    const bidi = client.Bidi();
    const bidiDone = collectStream(bidi);
    for (let i = 0; i < 3; i++) bidi.write({ text: `m${i}` });
    bidi.end();
    const echoed = await bidiDone;
    expect(echoed.code).toBe(grpc.status.OK);
    expect(echoed.items).toHaveLength(3);

    // The server may record the cancellation a moment after the client sees it.
    await sleep(100);
    const r = metrics.registry;
    const handled = async (method: string, type: string, code: string) =>
      sampleValue(r, 'grpc_server_handled_total', { ...M(method, type), grpc_code: code });

    expect(await sampleValue(r, 'grpc_server_started_total', M('Unary', 'unary'))).toBe(8);
    expect(await handled('Unary', 'unary', 'OK')).toBe(3);
    expect(await handled('Unary', 'unary', 'InvalidArgument')).toBe(2);
    expect(await handled('Unary', 'unary', 'Internal')).toBe(1);
    expect(await handled('Unary', 'unary', 'DeadlineExceeded')).toBe(1);
    expect(await handled('Unary', 'unary', 'ResourceExhausted')).toBe(1);
    expect(await total(r, 'grpc_server_handled_total', M('Unary', 'unary'))).toBe(8);
    // The oversized request never decodes, so 7 requests were received; 3 responses were sent
    // (the deadline-exceeded handler's late answer never leaves the server).
    expect(await sampleValue(r, 'grpc_server_msg_received_total', M('Unary', 'unary'))).toBe(7);
    expect(await sampleValue(r, 'grpc_server_msg_sent_total', M('Unary', 'unary'))).toBe(3);
    expect(await histogramCount(r, 'grpc_server_handling_seconds', M('Unary', 'unary'))).toBe(8);

    expect(await sampleValue(r, 'grpc_server_started_total', M('ServerStream', 'server_stream'))).toBe(3);
    expect(await handled('ServerStream', 'server_stream', 'OK')).toBe(1);
    expect(await handled('ServerStream', 'server_stream', 'Unavailable')).toBe(1);
    expect(await handled('ServerStream', 'server_stream', 'Canceled')).toBe(1);
    expect(await sampleValue(r, 'grpc_server_msg_received_total', M('ServerStream', 'server_stream'))).toBe(3);
    const streamedSent = await sampleValue(r, 'grpc_server_msg_sent_total', M('ServerStream', 'server_stream'));
    // 4 + 2 + however many the cancelled stream got out before the cancel (at least the one seen).
    expect(streamedSent).toBeGreaterThanOrEqual(7);

    expect(await handled('ClientStream', 'client_stream', 'OK')).toBe(1);
    expect(await sampleValue(r, 'grpc_server_msg_received_total', M('ClientStream', 'client_stream'))).toBe(5);
    expect(await sampleValue(r, 'grpc_server_msg_sent_total', M('ClientStream', 'client_stream'))).toBe(1);

    expect(await handled('Bidi', 'bidi_stream', 'OK')).toBe(1);
    expect(await sampleValue(r, 'grpc_server_msg_received_total', M('Bidi', 'bidi_stream'))).toBe(3);
    expect(await sampleValue(r, 'grpc_server_msg_sent_total', M('Bidi', 'bidi_stream'))).toBe(3);

    // One log line per call, each with a request id, none with the payload.
    const rpcLines = logs.lines.filter((l) => l.msg === 'rpc finished');
    expect(rpcLines).toHaveLength(8 + 3 + 1 + 1);
    for (const line of rpcLines) expect(line.requestId).toMatch(/^[A-Za-z0-9._:-]+$/);
    expect(new Set(rpcLines.map((l) => l.requestId)).size).toBe(rpcLines.length);
    expect(logs.raw()).not.toContain(PAYLOAD_MARKER);
    const internal = rpcLines.find((l) => l.grpcCode === 'Internal')!;
    expect(internal.level).toBe(50); // error
    expect(rpcLines.find((l) => l.grpcCode === 'OK')!.level).toBe(30); // info
  });

  it('echoes a sane client request id and replaces an unusable one', async () => {
    const md = new grpc.Metadata();
    md.set('x-request-id', 'client-chosen-id.42');
    const ok = await unary(client, { text: 'hi' }, {}, md);
    expect(ok.headers?.get('x-request-id')).toEqual(['client-chosen-id.42']);

    const bad = new grpc.Metadata();
    bad.set('x-request-id', 'has spaces and {json}');
    const failed = await unary(client, { fail_code: grpc.status.NOT_FOUND }, {}, bad);
    // Error before any message: a trailers-only response carries the id in its trailers.
    const id = failed.trailers?.get('x-request-id')[0];
    expect(typeof id).toBe('string');
    expect(id).not.toBe('has spaces and {json}');
    expect(logs.lines.some((l) => l.requestId === 'client-chosen-id.42' && l.grpcCode === 'OK')).toBe(true);
    expect(logs.lines.some((l) => l.requestId === id && l.grpcCode === 'NotFound')).toBe(true);
  });
});

describe('gRPC interceptor behind another interceptor', () => {
  // Not first in the chain, it cannot see statuses grpc-js sends by itself; it must still count
  // every call once, inferring deadline expiry from the cancellation.
  const { service, Client } = loadEchoService();
  let metrics: ClipserveMetrics;
  let server: grpc.Server;
  let client: EchoClient;
  const passThrough: grpc.ServerInterceptor = (_descriptor, call) => new grpc.ServerInterceptingCall(call);

  beforeAll(async () => {
    metrics = new ClipserveMetrics({ defaultMetrics: false });
    server = new grpc.Server({ interceptors: [passThrough, metrics.grpc.interceptor] });
    server.addService(service, handlers);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  });

  afterAll(async () => {
    client?.close();
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  it('counts deadline expiry and successes exactly once each', async () => {
    expect((await unary(client, { text: 'a' })).err).toBeNull();
    expect((await unary(client, { delay_ms: 300 }, { deadline: Date.now() + 50 })).err?.code).toBe(
      grpc.status.DEADLINE_EXCEEDED,
    );
    await sleep(350); // let the late handler finish: its answer must not count as a second outcome
    const labels = { grpc_type: 'unary', grpc_service: SERVICE, grpc_method: 'Unary' };
    expect(await sampleValue(metrics.registry, 'grpc_server_handled_total', { ...labels, grpc_code: 'OK' })).toBe(1);
    expect(
      await sampleValue(metrics.registry, 'grpc_server_handled_total', { ...labels, grpc_code: 'DeadlineExceeded' }),
    ).toBe(1);
    expect(await total(metrics.registry, 'grpc_server_handled_total', labels)).toBe(2);
    expect(await sampleValue(metrics.registry, 'grpc_server_msg_sent_total', labels)).toBe(1);
  });
});

describe('service metrics', () => {
  it('records what the batcher reports, exactly', async () => {
    const metrics = new ClipserveMetrics({ defaultMetrics: false });
    const s = metrics.service;
    const r = metrics.registry;
    // Everything exists at zero before any traffic.
    expect(await sampleValue(r, 'clipserve_items_embedded_total', { modality: 'image' })).toBe(0);
    expect(await sampleValue(r, 'clipserve_rejected_items_total', { modality: 'text', reason: 'overload' })).toBe(0);
    expect(await sampleValue(r, 'clipserve_queue_depth', { modality: 'text' })).toBe(0);

    s.queueDepth('text', 7);
    s.queueDepth('text', 3);
    s.queueDepth('image', 2);
    s.batchRun('text', 3, [0.001, 0.002, 0.004], 0.03);
    s.batchRun('image', 2, [0.5, 0.25], 4.2);
    s.batchRun('image', 1, [0.0], 1.1);
    s.preprocessed('text', 0.00004);
    s.preprocessed('image', 0.02);
    s.preprocessed('image', 0.03);
    s.embedded('text', 3);
    s.embedded('image', 2);
    s.embedded('image', 1);
    s.itemRejected('image', 'bad_image');
    s.itemRejected('image', 'too_large');
    s.itemRejected('text', 'overload');
    s.itemRejected('text', 'overload');
    s.itemRejected('image', 'deadline');
    s.itemRejected('text', 'cancelled');

    expect(await sampleValue(r, 'clipserve_queue_depth', { modality: 'text' })).toBe(3);
    expect(await sampleValue(r, 'clipserve_queue_depth', { modality: 'image' })).toBe(2);
    expect(await sampleValue(r, 'clipserve_items_embedded_total', { modality: 'text' })).toBe(3);
    expect(await sampleValue(r, 'clipserve_items_embedded_total', { modality: 'image' })).toBe(3);
    expect(await histogramCount(r, 'clipserve_batch_size', { modality: 'image' })).toBe(2);
    const sumOf = async (name: string, modality: string) =>
      (await seriesOf(r, name)).find((v) => v.metricName === `${name}_sum` && v.labels.modality === modality)!.value;
    expect(await sumOf('clipserve_batch_size', 'image')).toBe(3);
    expect(await histogramCount(r, 'clipserve_queue_wait_seconds', { modality: 'text' })).toBe(3);
    expect(await sumOf('clipserve_queue_wait_seconds', 'text')).toBeCloseTo(0.007, 12);
    expect(await histogramCount(r, 'clipserve_inference_seconds', { modality: 'image' })).toBe(2);
    expect(await sumOf('clipserve_inference_seconds', 'image')).toBeCloseTo(5.3, 12);
    expect(await histogramCount(r, 'clipserve_preprocess_seconds', { modality: 'image' })).toBe(2);
    // A tokenization time lands in a sub-millisecond bucket, not in the first catch-all bucket.
    const textPre = (await seriesOf(r, 'clipserve_preprocess_seconds')).filter(
      (v) => v.metricName === 'clipserve_preprocess_seconds_bucket' && v.labels.modality === 'text',
    );
    expect(textPre.find((b) => b.labels.le === 0.000025)!.value).toBe(0);
    expect(textPre.find((b) => b.labels.le === 0.00005)!.value).toBe(1);
    expect(await sampleValue(r, 'clipserve_rejected_items_total', { modality: 'text', reason: 'overload' })).toBe(2);
    expect(await sampleValue(r, 'clipserve_rejected_items_total', { modality: 'image', reason: 'bad_image' })).toBe(1);
    expect(await total(r, 'clipserve_rejected_items_total', {})).toBe(6);
  });

  it('reports the model once, replacing the old series on reload', async () => {
    const metrics = new ClipserveMetrics({ defaultMetrics: false });
    metrics.service.setModelInfo({ name: 'tiny-demo', version: '1', provider: 'cpu', demo: true });
    metrics.service.setModelInfo({ name: 'vit-l-14-ft', version: '2026-11-01', provider: 'cpu', demo: false });
    metrics.service.setModelLoadSeconds(12.5);
    const info = await seriesOf(metrics.registry, 'clipserve_model_info');
    expect(info).toEqual([
      { labels: { name: 'vit-l-14-ft', version: '2026-11-01', provider: 'cpu', demo: 'false' }, value: 1 },
    ]);
    expect((await seriesOf(metrics.registry, 'clipserve_model_load_seconds'))[0].value).toBe(12.5);
  });

  it('exports fine-tune job counts only once someone provides them', async () => {
    const metrics = new ClipserveMetrics({ defaultMetrics: false });
    expect(await seriesOf(metrics.registry, 'clipserve_finetune_jobs')).toEqual([]);
    metrics.service.setFineTuneJobCounts({ queued: 2, running: 1 });
    metrics.service.setFineTuneJobCounts({ running: 0, succeeded: 4 });
    const byState = async () =>
      Object.fromEntries(
        (await seriesOf(metrics.registry, 'clipserve_finetune_jobs')).map((v) => [v.labels.state, v.value]),
      );
    expect(await byState()).toEqual({ running: 0, succeeded: 4 });
    let failed = 0;
    metrics.service.setFineTuneJobCountsSource(async () => ({ failed: ++failed }));
    expect(await byState()).toEqual({ failed: 1 });
    expect(await byState()).toEqual({ failed: 2 });
  });

  it('rejects values that would be wrong with a typed error', () => {
    const s = new ClipserveMetrics({ defaultMetrics: false }).service;
    expect(() => s.queueDepth('audio' as never, 1)).toThrow(MetricsValueError);
    expect(() => s.queueDepth('text', -1)).toThrow(MetricsValueError);
    expect(() => s.batchRun('text', 2, [Number.NaN], 0.1)).toThrow(MetricsValueError);
    expect(() => s.itemRejected('text', 'bored' as never)).toThrow(MetricsValueError);
    expect(() => s.embedded('image', 1.5)).toThrow(MetricsValueError);
    expect(() => s.setFineTuneJobCounts({ running: -1 })).toThrow(MetricsValueError);
    expect(() => s.setFineTuneJobCounts({ 'bad state!': 1 })).toThrow(MetricsValueError);
    expect(() => s.setModelInfo({ name: '', version: '1', provider: 'cpu', demo: false })).toThrow(MetricsValueError);
  });
});

describe('metrics and probe HTTP server', () => {
  let metrics: ClipserveMetrics;
  let srv: MetricsHttpServer;
  let state = { loaded: false, draining: false };

  function get(p: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: srv.port, path: p, method }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  beforeAll(async () => {
    metrics = new ClipserveMetrics();
    metrics.setReadinessProbe(() => {
      if (state.draining) return { ready: false, reason: 'draining' };
      return state.loaded ? { ready: true, reason: 'ok' } : { ready: false, reason: 'loading model' };
    });
    srv = await startMetricsServer({ metrics, port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await srv?.close();
  });

  it('binds an ephemeral port when asked for port 0', () => {
    expect(srv.port).toBeGreaterThan(0);
  });

  it('serves /healthz always and /readyz only when loaded and not draining', async () => {
    expect((await get('/healthz')).status).toBe(200);
    let ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body)).toEqual({ ready: false, reason: 'loading model' });
    state = { loaded: true, draining: false };
    ready = await get('/readyz');
    expect(ready.status).toBe(200);
    expect((await get('/metrics')).body).toMatch(/^clipserve_ready 1$/m);
    state = { loaded: true, draining: true };
    ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.body).reason).toBe('draining');
    expect((await get('/metrics')).body).toMatch(/^clipserve_ready 0$/m);
  });

  it('serves the Prometheus text format with the default process and Node.js metrics', async () => {
    const res = await get('/metrics');
    expect(res.status).toBe(200);
    expect(res.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_seconds',
      'nodejs_heap_size_used_bytes',
      'clipserve_queue_depth',
      'grpc_server_handled_total',
    ]) {
      expect(res.body).toContain(`# TYPE ${name} `);
    }
    // prom-client's gauges named *_total break `promtool check metrics`; their per-type twins stay.
    expect(res.body).not.toMatch(/^# TYPE \w+_total gauge$/m);
    expect(res.body).toContain('# TYPE nodejs_active_handles gauge');
  });

  it('answers unknown paths with 404 and other methods with 405', async () => {
    expect((await get('/nope')).status).toBe(404);
    expect((await get('/metrics', 'POST')).status).toBe(405);
    expect((await get('/healthz', 'HEAD')).status).toBe(200);
  });

  it('reports a taken port as a MetricsServerError', async () => {
    await expect(startMetricsServer({ metrics, port: srv.port, host: '127.0.0.1' })).rejects.toBeInstanceOf(
      MetricsServerError,
    );
    await expect(startMetricsServer({ metrics, port: 70000 })).rejects.toBeInstanceOf(MetricsServerError);
  });
});
