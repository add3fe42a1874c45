/**
 * `clipserve serve` as a child process for the suites that need a whole serving process (hardening, faults, replicas): the
 * ports come from its JSON log, its resident memory from /proc/<pid>/status, and it never outlives
 * the test process (SIGKILL on exit).
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const REPO_ROOT = path.resolve(__dirname, '..', '..');
/** The demo bundle cache the other server suites use too (built once). */
export const TEST_CACHE_DIR = path.join(os.tmpdir(), 'clipserve-test-cache');

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly metricsPort: number;
  /** The HTTP API's port, when started with `--http-port auto` (or a port). */
  readonly httpPort: number | undefined;
  /** What it printed so far (stdout + stderr; the last MiB). */
  output(): string;
  /** JSON log records: all of them until it served, warnings and errors after. */
  logs(): Record<string, unknown>[];
  /** Resident set size now, in bytes (VmRSS). */
  rssBytes(): number;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `ms`; resolves when it is gone. */
  stop(ms?: number): Promise<number | string>;
}

const live = new Set<ChildProcess>();
let hooked = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!hooked) {
    hooked = true;
    process.once('exit', () => live.forEach((c) => c.kill('SIGKILL')));
  }
}

const MAX_KEPT_OUTPUT = 1 << 20;
const keepTail = (s: string): string => (s.length > MAX_KEPT_OUTPUT ? s.slice(-MAX_KEPT_OUTPUT) : s);

export function cliPath(): string {
  const cli = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" first`);
  return cli;
}

export function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!kb) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) * 1024;
}

export interface StartProcessOptions {
  env?: NodeJS.ProcessEnv;
  readyTimeoutMs?: number;
  /** Sees every JSON log record (e.g. the per-call "rpc finished" lines with their durations). */
  onRecord?: (rec: Record<string, unknown>) => void;
  /** A command that execs its arguments (the node command line), e.g. a shell setting a ulimit. */
  wrap?: string[];
}

/** `clipserve serve <args>` on 127.0.0.1, every port ephemeral, the shared test cache. */
function serveArgv(args: string[]): string[] {
  const fixed = ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--http-port', '0'];
  return [cliPath(), 'serve', ...fixed, '--cache-dir', TEST_CACHE_DIR, ...args];
}

/** Runs `clipserve serve <args>` on 127.0.0.1 with ephemeral ports; resolves once it serves. */
export async function startServerProcess(
  args: string[] = [],
  options: StartProcessOptions = {},
): Promise<ServerProcess> {
  const { env = {}, readyTimeoutMs = 120_000, onRecord, wrap } = options;
  const argv = serveArgv(args);
  const [command, ...commandArgs] = wrap ? [...wrap, process.execPath, ...argv] : [process.execPath, ...argv];
  const child = spawn(command, commandArgs, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  track(child);
  let text = '';
  const records: Record<string, unknown>[] = [];
  let pending = '';
  let port: number | undefined;
  let metricsPort: number | undefined;
  let httpPort: number | undefined;
  let readySeen = false;
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`clipserve serve not ready in ${readyTimeoutMs} ms:\n${text}`)),
      readyTimeoutMs,
    );
    child.stdout!.on('data', (chunk: Buffer) => {
      text = keepTail(text + chunk.toString());
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        onRecord?.(rec);
        // Per-call info lines add up over thousands of calls: keep warnings and above once serving.
        if (!readySeen || Number(rec.level) >= 40) records.push(rec);
        const msg = String(rec.msg ?? '');
        if (msg === 'grpc server listening') port = rec.port as number;
        if (msg.startsWith('metrics and probes listening')) metricsPort = rec.port as number;
        if (msg.startsWith('http api listening')) httpPort = rec.port as number;
        if (msg.startsWith('model ready') && port !== undefined && metricsPort !== undefined) {
          readySeen = true;
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (text = keepTail(text + chunk.toString())));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`clipserve serve exited (${code}) before it was ready:\n${text}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const stop = async (ms = 10_000): Promise<number | string> => {
    if (child.exitCode !== null || child.signalCode !== null) return exited;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  return {
    child,
    pid: child.pid!,
    port: port!,
    metricsPort: metricsPort!,
    httpPort,
    output: () => text,
    logs: () => records,
    rssBytes: () => rssOf(child.pid!),
    exited,
    stop,
  };
}

/** Runs `clipserve serve <args>` expecting it to fail at start; resolves with its exit code and output. */
export function runServeExpectingFailure(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | string; output: string }> {
  const child = spawn(process.execPath, serveArgv(args), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? 'unknown', output });
    }),
  );
}
