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
import { PACKAGE_ROOT } from '../util/paths';
import type { ChildMessage, LoadReport, LoadScenario, ParentMessage } from './load-protocol';

/** The slice of the SDK's ClipClient the generator uses (the SDK is a separate package). */
interface SdkClient {
  embedTexts(texts: string[], opts?: { timeoutMs?: number }): Promise<Float32Array[]>;
  embedImages(images: Uint8Array[], opts?: { timeoutMs?: number }): Promise<Float32Array[]>;
  embedStream(source: AsyncIterable<{ id: string; text: string } | { id: string; image: Uint8Array }>, opts?: { maxInFlight?: number }): AsyncIterable<{ id: string; error?: { codeName: string; details: string } }>;
  modelInfo(): Promise<unknown>;
  close(): void;
}
type SdkModule = { ClipClient: new (o: Record<string, unknown>) => SdkClient };

export const SDK_ENTRY = path.join(PACKAGE_ROOT, 'sdk', 'dist', 'cjs', 'index.js');

function loadSdk(): SdkModule {
  if (!fs.existsSync(SDK_ENTRY)) throw new Error(`the SDK is not built (${SDK_ENTRY} is missing): run npm --prefix sdk run build`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(SDK_ENTRY) as SdkModule;
}

/**
 * Completions this close to the window's first one belong to the same burst (one batch's
 * responses arrive together) and open the measured span rather than count inside it.
 */
const BURST_MS = 5;

/**
 * Items per second from completion times: the items completed after the first burst, over the
 * time from the first to the last completion. Counting items per fixed window instead would move
 * the figure by a whole batch whenever one more or one fewer batch's responses happen to land in
 * it: ±20% for 30-image batches of a second each in a 5 s window.
 */
export function completionRate(times: readonly number[], windowSeconds: number): number {
  if (times.length < 2) return times.length / windowSeconds;
  const sorted = [...times].sort((a, b) => a - b);
  const first = sorted[0];
  const span = sorted[sorted.length - 1] - first;
  if (span <= BURST_MS) return times.length / windowSeconds;
  let after = 0;
  for (const t of sorted) if (t > first + BURST_MS) after++;
  return (after * 1000) / span;
}

class Window {
  readonly latencies: number[] = [];
  readonly completedAt: number[] = [];
  completed = 0;
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
    this.completed++;
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
  return { completed: w.completed, itemsPerSec: completionRate(w.completedAt, s.seconds), errors: w.errors, errorSamples: [...w.errorSamples], seconds: s.seconds, latenciesMs: w.latencies, cpuCores };
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
