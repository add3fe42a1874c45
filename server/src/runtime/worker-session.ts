/**
 * Main-thread handle on an onnxruntime session living in a worker thread (./session-worker).
 * Inputs and outputs cross as transferred ArrayBuffers; failures come back as RuntimeError.
 */
import { Worker } from 'node:worker_threads';
import { compiledModule } from '../util/paths';
import type { ExecutionProvider, SessionWorkerData, WireTensor, WorkerRequest, WorkerResponse } from './session-protocol';

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

export class WorkerSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private closing: Promise<void> | undefined;
  private failure: Error | undefined;

  private constructor(private readonly worker: Worker, readonly provider: ExecutionProvider, readonly inputNames: string[], readonly outputNames: string[], readonly label: string) {
    worker.on('message', (msg: WorkerResponse) => {
      if (!('id' in msg)) return;
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.kind === 'result') p.resolve(msg.outputs);
      else if (msg.kind === 'error') p.reject(new RuntimeError(`${label}: inference failed: ${msg.message}`));
      else p.resolve({});
    });
    const failAll = (err: Error): void => {
      this.failure = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', (err) => failAll(new RuntimeError(`${label}: worker crashed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (!this.closed) failAll(new RuntimeError(`${label}: worker exited with code ${code}`));
    });
  }

  /** Starts the worker and waits until its session exists (or fails to). */
  static create(data: SessionWorkerData, label: string): Promise<WorkerSession> {
    const worker = new Worker(compiledModule('runtime/session-worker'), { workerData: data });
    return new Promise<WorkerSession>((resolve, reject) => {
      const onMessage = (msg: WorkerResponse): void => {
        if (msg.kind === 'ready') {
          cleanup();
          resolve(new WorkerSession(worker, msg.provider, msg.inputNames, msg.outputNames, label));
        } else if (msg.kind === 'init-error') {
          cleanup();
          void worker.terminate();
          reject(new RuntimeError(`${label}: cannot create an onnxruntime session for ${data.modelPath}: ${msg.message}`));
        }
      };
      const onError = (err: Error): void => {
        cleanup();
        reject(new RuntimeError(`${label}: worker failed to start: ${err.message}`));
      };
      const cleanup = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
    });
  }

  /** Runs the session. The feeds' buffers are transferred to the worker (detached here). */
  run(feeds: Record<string, WireTensor>, outputs: string[]): Promise<Record<string, WireTensor>> {
    if (this.closed) return Promise.reject(new RuntimeError(`${this.label}: session is closed`));
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const transfer = Object.values(feeds).map((f) => f.data);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, kind: 'run', feeds, outputs } satisfies WorkerRequest, transfer);
    });
  }

  /** Lets queued runs finish, releases the session and stops the worker. */
  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        if (!this.failure) {
          const id = this.nextId++;
          const done = new Promise<void>((resolve) => this.pending.set(id, { resolve: () => resolve(), reject: () => resolve() }));
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
