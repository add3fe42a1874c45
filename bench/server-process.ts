/**
 * The server under test, as its own process: `clipserve serve` from dist/, bound to 127.0.0.1 on
 * an ephemeral port. Its CPU time and peak RSS come from /proc (Linux), so they are the server's
 * alone, not the load generator's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { compiledModule } from '../server/src/util/paths';

export interface ServerFlags {
  model: string;
  provider: 'cpu' | 'cuda';
  intraOpThreads: number;
  maxBatchSize: number;
  /** undefined: the server's default */
  maxQueueDelayMs?: number;
  preprocessWorkers?: number;
  /** Another build's dist/cli/main.js (a before/after comparison); this build's by default. */
  cli?: string;
}

/** Linux USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every mainstream kernel config). */
const CLOCK_TICKS_PER_S = 100;

export class ServerProcess {
  private exited = false;
  private stderrTail = '';
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly metricsPort: number,
    readonly readySeconds: number,
  ) {
    child.once('exit', () => (this.exited = true));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Starts the server and resolves once it logs "model ready: serving"; readySeconds counts from spawn. */
  static async start(flags: ServerFlags, timeoutSeconds = 600): Promise<ServerProcess> {
    const args = [
      flags.cli ?? compiledModule('cli/main'),
      'serve',
      '--model',
      flags.model,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--metrics-port',
      '0',
      '--http-port',
      '0',
      '--provider',
      flags.provider,
      '--intra-op-threads',
      String(flags.intraOpThreads),
      '--max-batch-size',
      String(flags.maxBatchSize),
      '--queue-bound',
      '4096',
      '--log-level',
      'info',
    ];
    if (flags.maxQueueDelayMs !== undefined) args.push('--max-queue-delay-ms', String(flags.maxQueueDelayMs));
    if (flags.preprocessWorkers !== undefined) args.push('--preprocess-workers', String(flags.preprocessWorkers));
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const lines = readline.createInterface({ input: child.stdout! });
    return new Promise<ServerProcess>((resolve, reject) => {
      let port: number | undefined;
      let metricsPort: number | undefined;
      const timer = setTimeout(
        () => fail(new Error(`the server was not ready after ${timeoutSeconds} s`)),
        timeoutSeconds * 1000,
      );
      const fail = (err: Error): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`${err.message}\n${stderr}`));
      };
      child.once('exit', (code) => fail(new Error(`the server exited with code ${code} before it was ready`)));
      lines.on('line', (line) => {
        let rec: { msg?: string; port?: number; err?: { message?: string } };
        try {
          rec = JSON.parse(line) as typeof rec;
        } catch {
          return;
        }
        if (rec.msg === 'grpc server listening') port = rec.port;
        if (typeof rec.msg === 'string' && rec.msg.startsWith('metrics and probes listening')) metricsPort = rec.port;
        if (rec.msg === 'model failed to load')
          fail(new Error(`the server failed to load the model: ${rec.err?.message ?? line}`));
        if (rec.msg === 'model ready: serving') {
          const provider = (rec as { model?: { provider?: string } }).model?.provider;
          if (provider !== flags.provider)
            return fail(new Error(`the server came up on provider ${provider}, not ${flags.provider}`));
          clearTimeout(timer);
          child.removeAllListeners('exit');
          lines.removeAllListeners('line');
          if (port === undefined || metricsPort === undefined)
            return fail(new Error('the server did not log its gRPC and metrics ports'));
          const p = new ServerProcess(child, port, metricsPort, (performance.now() - t0) / 1000);
          p.stderrTail = stderr;
          resolve(p);
        }
      });
    });
  }

  /** utime + stime of the process (all its threads), seconds. */
  cpuSeconds(): number {
    const stat = fs.readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    // Fields after the parenthesised command name (which may itself contain spaces).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS_PER_S;
  }

  /** Peak resident set size since start or the last resetPeakRss(), bytes. */
  peakRssBytes(): number {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  }

  rssBytes(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  }

  /** Resets VmHWM to the current RSS ("5" in clear_refs), so each scenario reports its own peak. */
  resetPeakRss(): void {
    try {
      fs.writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
    } catch {
      /* not permitted here: peaks are then since start */
    }
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 30_000);
    await done;
    clearTimeout(timer);
  }

  get logTail(): string {
    return this.stderrTail;
  }
}
