/**
 * The two homes of a preprocessing worker behind one small interface: a worker thread (serving:
 * cheap to talk to, results transferred without a copy) or a child process (background work such
 * as fine-tuning: its own heap bound, and every thread it starts — libuv's pool, where libvips
 * decodes, included — inherits its lowest CPU priority, which threads of the server cannot do).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import type { JobReply, JobRequest, WorkerInit } from './worker-protocol';

/** The environment variable that carries WorkerInit to a child process. */
export const CHILD_INIT_ENV = 'CLIPSERVE_PREPROCESS_INIT';

export type Isolation = 'thread' | 'process';

export interface WorkerChannel {
  post(job: JobRequest, transfer: ArrayBuffer[]): void;
  onMessage(fn: (reply: JobReply) => void): void;
  onError(fn: (err: Error) => void): void;
  onExit(fn: (code: number | string) => void): void;
  /** Keeps the process alive while a job runs; idle workers must not. */
  ref(): void;
  unref(): void;
  terminate(): Promise<void>;
  removeAllListeners(): void;
}

export function spawnChannel(script: string, init: WorkerInit, isolation: Isolation, heapMb: number): WorkerChannel {
  return isolation === 'process' ? childChannel(script, init, heapMb) : threadChannel(script, init);
}

function threadChannel(script: string, init: WorkerInit): WorkerChannel {
  const worker = new Worker(script, { workerData: init });
  return {
    post: (job, transfer) => worker.postMessage(job, transfer),
    onMessage: (fn) => worker.on('message', fn),
    onError: (fn) => worker.on('error', fn),
    onExit: (fn) => worker.on('exit', fn),
    ref: () => worker.ref(),
    unref: () => worker.unref(),
    terminate: async () => void (await worker.terminate()),
    removeAllListeners: () => void worker.removeAllListeners(),
  };
}

function childChannel(script: string, init: WorkerInit, heapMb: number): WorkerChannel {
  const child: ChildProcess = fork(script, [], {
    // Structured clone, so typed arrays cross as typed arrays (copied: a process boundary).
    serialization: 'advanced',
    execArgv: [`--max-old-space-size=${heapMb}`],
    env: { ...process.env, [CHILD_INIT_ENV]: JSON.stringify(init) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return {
    post: (job) => child.send(job),
    onMessage: (fn) => child.on('message', (m) => fn(m as JobReply)),
    onError: (fn) => child.on('error', fn),
    onExit: (fn) => child.on('exit', (code, signal) => fn(code ?? signal ?? 'unknown')),
    ref: () => {
      child.ref();
      child.channel?.ref();
    },
    unref: () => {
      child.unref();
      child.channel?.unref();
    },
    terminate: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.ref(); // wait for it even when idle (unref'd)
      child.kill('SIGKILL');
      await exited;
    },
    removeAllListeners: () => void child.removeAllListeners(),
  };
}
