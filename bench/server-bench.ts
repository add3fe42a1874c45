/**
 * Served throughput and latency: the real server (./server-process) over loopback gRPC, driven by
 * the SDK from a load-generator child process (./load-generator), with the server's CPU time and
 * peak RSS per scenario.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { compiledBenchModule } from './paths';
import type { ChildMessage, LoadKind, LoadReport, LoadScenario } from './load-protocol';
import type { ServerProcess } from './server-process';
import { breakdown, scrape, type ServedBreakdown } from './server-metrics';
import { summarize, type LatencySummary } from './stats';

export interface ServedResult {
  kind: LoadKind;
  batching: 'on' | 'off';
  /** image scenarios: the kind of image sent */
  image?: string;
  concurrency: number;
  itemsPerSec: number;
  errors: number;
  errorSamples?: string[];
  latency: LatencySummary;
  /** server CPU seconds per wall second in the window (2.0 = two cores busy) */
  serverCpuCores: number;
  /** the load generator's CPU, likewise: on one machine it shares the server's cores */
  clientCpuCores: number;
  serverPeakRssBytes: number;
  /** from the server's histograms over the whole scenario (warm-up included) */
  breakdown: ServedBreakdown;
}

export class LoadGenerator {
  private constructor(private readonly child: ChildProcess) {}

  static async start(): Promise<LoadGenerator> {
    const child = fork(compiledBenchModule('load-generator'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', (m: ChildMessage) =>
        m.kind === 'ready' ? resolve() : reject(new Error(`load generator: unexpected ${m.kind}`)),
      );
      child.once('exit', (code) => reject(new Error(`the load generator exited with code ${code}`)));
    });
    child.removeAllListeners('exit');
    return new LoadGenerator(child);
  }

  run(scenario: LoadScenario): Promise<LoadReport> {
    return new Promise<LoadReport>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`the load generator exited with code ${code}`));
      this.child.once('exit', onExit);
      this.child.once('message', (m: ChildMessage) => {
        this.child.off('exit', onExit);
        if (m.kind === 'report') resolve(m.report);
        else
          reject(
            new Error(m.kind === 'failed' ? `load generator: ${m.message}` : `load generator: unexpected ${m.kind}`),
          );
      });
      this.child.send({ kind: 'run', scenario });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.send({ kind: 'exit' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(timer);
  }
}

export interface ScenarioSpec {
  kind: LoadKind;
  concurrency: number;
  image?: { label: string; bytes: Buffer };
}

/** Runs one scenario and attributes server CPU and peak RSS to it. */
export async function runServed(
  server: ServerProcess,
  gen: LoadGenerator,
  batching: 'on' | 'off',
  spec: ScenarioSpec,
  timing: { warmupSeconds: number; seconds: number },
  captions: string[],
): Promise<ServedResult> {
  server.resetPeakRss();
  // CPU is sampled around the whole run (warm-up included) and scaled by its wall time: the
  // window the generator counts sits inside it at the same load.
  const m0 = await scrape(server.metricsPort);
  const cpu0 = server.cpuSeconds();
  const t0 = performance.now();
  const report = await gen.run({
    address: server.address,
    kind: spec.kind,
    concurrency: spec.concurrency,
    warmupSeconds: timing.warmupSeconds,
    seconds: timing.seconds,
    captions,
    ...(spec.image ? { imageBase64: spec.image.bytes.toString('base64') } : {}),
  });
  const wall = (performance.now() - t0) / 1000;
  const cpu = server.cpuSeconds() - cpu0;
  const m1 = await scrape(server.metricsPort);
  return {
    kind: spec.kind,
    batching,
    ...(spec.image ? { image: spec.image.label } : {}),
    concurrency: spec.concurrency,
    itemsPerSec: report.itemsPerSec,
    errors: report.errors,
    ...(report.errorSamples.length ? { errorSamples: report.errorSamples } : {}),
    latency: summarize(report.latenciesMs),
    serverCpuCores: cpu / wall,
    clientCpuCores: report.cpuCores,
    serverPeakRssBytes: server.peakRssBytes(),
    breakdown: breakdown(m0, m1, spec.kind.includes('image') ? 'image' : 'text'),
  };
}
