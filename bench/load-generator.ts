/**
 * The load generator: a child process (forked by ./server-bench) that drives the server through
 * the published SDK (@clipserve/sdk, built into sdk/dist) exactly as an application would, so
 * its CPU is not the server's and the measured latency includes the client library.
 *
 * Window: every caller starts at once; items finishing during the first `warmupSeconds` are not
 * counted (connection set-up, JIT, the server's first batches), then items finishing during the
 * next `seconds` are. Callers stop starting new calls when the window closes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../server/src/util/paths';
import type { ChildMessage, LoadReport, LoadScenario, ParentMessage } from './load-protocol';

/** The slice of the SDK's ClipClient the generator uses (the SDK is a separate package). */
interface SdkClient {
  embedTexts(texts: string[], opts?: { timeoutMs?: number }): Promise<Float32Array[]>;
  embedImages(images: Uint8Array[], opts?: { timeoutMs?: number }): Promise<Float32Array[]>;
  embedStream(
    source: AsyncIterable<{ id: string; text: string } | { id: string; image: Uint8Array }>,
    opts?: { maxInFlight?: number },
  ): AsyncIterable<{ id: string; error?: { codeName: string; details: string } }>;
  modelInfo(): Promise<unknown>;
  close(): void;
}
type SdkModule = { ClipClient: new (o: Record<string, unknown>) => SdkClient };

export const SDK_ENTRY = path.join(PACKAGE_ROOT, 'sdk', 'dist', 'cjs', 'index.js');

function loadSdk(): SdkModule {
  if (!fs.existsSync(SDK_ENTRY))
    throw new Error(`the SDK is not built (${SDK_ENTRY} is missing): run npm run build -w @clipserve/sdk`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(SDK_ENTRY) as SdkModule;
}

/**
 * Items per second from completion times: the least-squares slope of the running count of
 * completions against time. Counting items per fixed window instead moves the figure by a whole
 * batch whenever one more or one fewer batch's responses land in the window (±20% for 30-image
 * batches of a second each in a 5 s window). A staircase of regular bursts has exactly the slope
 * burst size / period, whatever its phase against the window; evenly spread completions give
 * their rate. Completions too close together to span anything fall back to the plain count.
 */
export function completionRate(times: readonly number[], windowSeconds: number): number {
  const n = times.length;
  const plain = n / windowSeconds;
  if (n < 2) return plain;
  const t = Float64Array.from(times).sort();
  let tMean = 0;
  for (const v of t) tMean += v / n;
  const cMean = (n - 1) / 2;
  let cov = 0;
  let varT = 0;
  for (let i = 0; i < n; i++) {
    cov += (t[i] - tMean) * (i - cMean);
    varT += (t[i] - tMean) ** 2;
  }
  // One burst alone (spread under 1% of the window) says nothing about the period.
  if (Math.sqrt(varT / n) < windowSeconds * 10) return plain;
  return (cov / varT) * 1000;
}

class Window {
  readonly latencies: number[] = [];
  readonly completedAt: number[] = [];
  errors = 0;
  readonly errorSamples = new Set<string>();
  private readonly start: number;
  readonly end: number;
  constructor(s: LoadScenario) {
    this.start = performance.now() + s.warmupSeconds * 1000;
    this.end = this.start + s.seconds * 1000;
  }
  open(): boolean {
    return performance.now() < this.end;
  }
  record(sentAt: number, error?: string): void {
    const now = performance.now();
    if (now < this.start || now > this.end) return;
    if (error !== undefined) {
      this.errors++;
      if (this.errorSamples.size < 5) this.errorSamples.add(error);
      return;
    }
    this.completedAt.push(now);
    this.latencies.push(now - sentAt);
  }
}

async function unary(client: SdkClient, s: LoadScenario, w: Window): Promise<void> {
  const image = s.imageBase64 ? Buffer.from(s.imageBase64, 'base64') : undefined;
  const caller = async (c: number): Promise<void> => {
    for (let j = 0; w.open(); j++) {
      const t0 = performance.now();
      try {
        if (s.kind === 'image') await client.embedImages([image!]);
        else await client.embedTexts([s.captions[(c * 7919 + j) % s.captions.length]]);
        w.record(t0);
      } catch (err) {
        w.record(t0, (err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: s.concurrency }, (_, c) => caller(c)));
}

async function stream(client: SdkClient, s: LoadScenario, w: Window): Promise<void> {
  const image = s.imageBase64 ? Buffer.from(s.imageBase64, 'base64') : undefined;
  const sentAt = new Map<string, number>();
  async function* source(): AsyncGenerator<{ id: string; text: string } | { id: string; image: Uint8Array }> {
    for (let i = 0; w.open(); i++) {
      const id = String(i);
      sentAt.set(id, performance.now());
      yield s.kind === 'stream-image' ? { id, image: image! } : { id, text: s.captions[i % s.captions.length] };
    }
  }
  for await (const r of client.embedStream(source(), { maxInFlight: s.concurrency })) {
    const t0 = sentAt.get(r.id)!;
    sentAt.delete(r.id);
    w.record(t0, r.error ? `${r.error.codeName}: ${r.error.details}` : undefined);
  }
}

export async function runScenario(client: SdkClient, s: LoadScenario): Promise<LoadReport> {
  const w = new Window(s);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  if (s.kind === 'text' || s.kind === 'image') await unary(client, s, w);
  else await stream(client, s, w);
  const cpu = process.cpuUsage(cpu0);
  const cpuCores = (cpu.user + cpu.system) / 1e3 / (performance.now() - t0);
  return {
    itemsPerSec: completionRate(w.completedAt, s.seconds),
    errors: w.errors,
    errorSamples: [...w.errorSamples],
    latenciesMs: w.latencies,
    cpuCores,
  };
}

function main(): void {
  const send = (m: ChildMessage): void => void process.send!(m);
  const { ClipClient } = loadSdk();
  const clients = new Map<string, SdkClient>();
  process.on('message', (msg: ParentMessage) => {
    if (msg.kind === 'exit') {
      for (const c of clients.values()) c.close();
      process.disconnect();
      return;
    }
    const s = msg.scenario;
    let client = clients.get(s.address);
    if (!client) {
      // retry off: an error must show up as an error, not as a slow call.
      client = new ClipClient({ address: s.address, retry: false, defaultTimeoutMs: 120_000 });
      clients.set(s.address, client);
    }
    const c = client;
    c.modelInfo()
      .then(() => runScenario(c, s))
      .then(
        (report) => send({ kind: 'report', report }),
        (err: unknown) => send({ kind: 'failed', message: err instanceof Error ? err.message : String(err) }),
      );
  });
  send({ kind: 'ready' });
}

if (require.main === module) main();
