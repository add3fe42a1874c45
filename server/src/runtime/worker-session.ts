/**
 * Main-thread handle on an onnxruntime session living in a worker thread (./session-worker).
 * Inputs and outputs cross as transferred ArrayBuffers; failures come back as RuntimeError.
 *
 * A worker that dies (an uncaught error, the worker's own heap limit) fails the runs it held, and
 * the next run starts a fresh one, so one bad moment does not leave the model refusing every call
 * until the process restarts. Restarts are spaced by RESPAWN_INTERVAL_MS so a worker that cannot
 * start does not make every call pay for a session load.
 */
import { Worker } from 'node:worker_threads';
import { compiledModule } from '../util/paths';
import type {
  ExecutionProvider,
  SessionWorkerData,
  WireTensor,
  WorkerRequest,
  WorkerResponse,
} from './session-protocol';

export class RuntimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuntimeError';
  }
}

interface Pending {
  resolve: (outputs: Record<string, WireTensor>) => void;
  reject: (err: Error) => void;
}

interface Started {
  worker: Worker;
  provider: ExecutionProvider;
  inputNames: string[];
  outputNames: string[];
}

const RESPAWN_INTERVAL_MS = 1000;

/** Starts a worker and waits until its session exists (or fails to). */
function startWorker(data: SessionWorkerData, label: string): Promise<Started> {
  const worker = new Worker(compiledModule('runtime/session-worker'), { workerData: data });
  return new Promise<Started>((resolve, reject) => {
    const onMessage = (msg: WorkerResponse): void => {
      if (msg.kind === 'ready') {
        cleanup();
        resolve({ worker, provider: msg.provider, inputNames: msg.inputNames, outputNames: msg.outputNames });
      } else if (msg.kind === 'init-error') {
        cleanup();
        void worker.terminate();
        reject(
          new RuntimeError(`${label}: cannot create an onnxruntime session for ${data.modelPath}: ${msg.message}`),
        );
      }
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new RuntimeError(`${label}: worker failed to start: ${err.message}`));
    };
    const onExit = (code: number): void => {
      cleanup();
      reject(new RuntimeError(`${label}: worker exited with code ${code} while starting`));
    };
    const cleanup = (): void => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

export class WorkerSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Why the current worker is gone; undefined while it is healthy. */
  private failure: Error | undefined;
  private lastStartMs = Date.now();
  private restarting: Promise<void> | undefined;
  private restarts = 0;

  private constructor(
    private worker: Worker,
    readonly provider: ExecutionProvider,
    readonly inputNames: string[],
    readonly outputNames: string[],
    readonly label: string,
    private readonly data: SessionWorkerData,
  ) {
    this.attach(worker);
  }

  static async create(data: SessionWorkerData, label: string): Promise<WorkerSession> {
    const s = await startWorker(data, label);
    return new WorkerSession(s.worker, s.provider, s.inputNames, s.outputNames, label, data);
  }

  /** How many times a dead worker has been replaced. */
  get restartCount(): number {
    return this.restarts;
  }

  private attach(worker: Worker): void {
    worker.on('message', (msg: WorkerResponse) => {
      if (!('id' in msg)) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.kind === 'result') p.resolve(msg.outputs);
      else if (msg.kind === 'error') p.reject(new RuntimeError(`${this.label}: inference failed: ${msg.message}`));
      else p.resolve({});
    });
    const failAll = (err: Error): void => {
      if (worker !== this.worker) return;
      this.failure = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', (err) => failAll(new RuntimeError(`${this.label}: worker crashed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (!this.closed) failAll(new RuntimeError(`${this.label}: worker exited with code ${code}`));
    });
  }

  /** Replaces a dead worker, at most once per RESPAWN_INTERVAL_MS; concurrent callers share one try. */
  private restart(): Promise<void> {
    if (!this.restarting) {
      if (Date.now() - this.lastStartMs < RESPAWN_INTERVAL_MS) return Promise.reject(this.failure);
      this.lastStartMs = Date.now();
      this.restarting = startWorker(this.data, this.label)
        .then((s) => {
          if (this.closed) {
            void s.worker.terminate();
            return;
          }
          this.worker = s.worker;
          this.attach(s.worker);
          this.failure = undefined;
          this.restarts++;
        })
        .finally(() => {
          this.restarting = undefined;
        });
    }
    return this.restarting;
  }

  /** Runs the session. The feeds' buffers are transferred to the worker (detached here). */
  async run(feeds: Record<string, WireTensor>, outputs: string[]): Promise<Record<string, WireTensor>> {
    if (this.closed) throw new RuntimeError(`${this.label}: session is closed`);
    // threadId is -1 as soon as the thread is gone, which can be before its 'exit' event.
    if (!this.failure && this.worker.threadId === -1) this.failure = new RuntimeError(`${this.label}: worker is gone`);
    if (this.failure) await this.restart();
    const id = this.nextId++;
    const transfer = Object.values(feeds).map((f) => f.data);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, kind: 'run', feeds, outputs } satisfies WorkerRequest, transfer);
    });
  }

  /** For tests and operators: ends the worker as a crash would (the next run starts a new one). */
  async kill(): Promise<void> {
    await this.worker.terminate();
  }

  /** Lets queued runs finish, releases the session and stops the worker. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        await this.restarting?.catch(() => undefined);
        if (!this.failure) {
          const id = this.nextId++;
          const done = new Promise<void>((resolve) =>
            this.pending.set(id, { resolve: () => resolve(), reject: () => resolve() }),
          );
          this.worker.postMessage({ id, kind: 'close' } satisfies WorkerRequest);
          await done;
        }
        this.closed = true;
        await this.worker.terminate();
      })();
    }
    return this.closing;
  }
}
