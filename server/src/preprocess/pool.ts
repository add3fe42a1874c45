/**
 * A small pool of worker_threads for decode + preprocess, so that CPU-bound image work never
 * blocks the server's event loop. Each worker runs one job at a time; jobs queue FIFO. Bytes go to
 * the worker as a private copy (the caller's buffer may be a view into a larger pooled buffer),
 * the tensor comes back by transfer. A worker that dies fails only its own job and is replaced.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { PreprocessConfig } from '../model/config';
import { compiledModule } from '../util/paths';
import { checkLimits, DEFAULT_IMAGE_LIMITS, ImageError, type ImageLimits } from './errors';
import { checkConfig } from './transform';
import type { JobReply, JobRequest, WorkerInit } from './worker-protocol';

export interface PreprocessPoolOptions {
  /** Number of worker threads; default: the number of CPU cores. */
  size?: number;
  cfg: PreprocessConfig;
  limits?: ImageLimits;
}

interface Job {
  id: number;
  bytes: Uint8Array;
  resolve: (t: Float32Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  job?: Job;
}

export class PreprocessPool {
  readonly size: number;
  private readonly init: WorkerInit;
  private readonly script: string;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  private drained?: () => void;
  /** Worker deaths since the last reply; a worker that cannot even start (broken build, missing
   *  native module) must not be respawned in a tight loop. */
  private deathsSinceReply = 0;
  private broken?: Error;

  constructor(opts: { size?: number; cfg: PreprocessConfig; limits?: ImageLimits }) {
    const size = opts.size ?? (os.availableParallelism?.() ?? os.cpus().length);
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`PreprocessPool size must be a positive integer, got ${size}`);
    this.size = size;
    checkConfig(opts.cfg); // fail at construction, not on every job
    this.init = { cfg: opts.cfg, limits: checkLimits(opts.limits ?? DEFAULT_IMAGE_LIMITS) };
    this.script = compiledModule('preprocess/worker');
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  /** Preprocesses one image on a worker; rejects with ImageError for bad input. */
  run(bytes: Uint8Array): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new Error('PreprocessPool is closed'));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, bytes: new Uint8Array(bytes), resolve, reject });
      this.dispatch();
    });
  }

  /** Rejects queued jobs, lets running ones finish, then stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new Error('PreprocessPool is closed'));
    if (this.slots.some((s) => s.job)) await new Promise<void>((r) => (this.drained = r));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private spawn(): Slot {
    const worker = new Worker(this.script, { workerData: this.init });
    const slot: Slot = { worker };
    worker.unref(); // idle workers must not keep the process alive; ref'd while a job runs
    worker.on('message', (reply: JobReply) => this.onReply(slot, reply));
    worker.on('error', (err) => this.onWorkerDeath(slot, err));
    worker.on('exit', (code) => {
      if (!this.closed || slot.job) this.onWorkerDeath(slot, new Error(`preprocess worker exited with code ${code}`));
    });
    return slot;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.job) continue;
      const job = this.queue.shift()!;
      slot.job = job;
      slot.worker.ref();
      const req: JobRequest = { id: job.id, bytes: job.bytes };
      slot.worker.postMessage(req, [job.bytes.buffer as ArrayBuffer]);
    }
  }

  private finish(slot: Slot): Job | undefined {
    const job = slot.job;
    slot.job = undefined;
    slot.worker.unref();
    if (this.closed && this.drained && !this.slots.some((s) => s.job)) this.drained();
    return job;
  }

  private onReply(slot: Slot, reply: JobReply): void {
    const job = slot.job;
    if (!job || job.id !== reply.id) return;
    this.deathsSinceReply = 0;
    this.finish(slot);
    // Re-wrap in this realm's Float32Array (no copy): structured clone creates the view in the
    // main context, which differs from the caller's under vm sandboxes such as jest, where
    // `instanceof Float32Array` checks (onnxruntime's Tensor) would otherwise fail.
    if (reply.ok) job.resolve(new Float32Array(reply.tensor.buffer, reply.tensor.byteOffset, reply.tensor.length));
    else if (reply.code) job.reject(new ImageError(reply.code, reply.message));
    else job.reject(Object.assign(reply.name === 'RangeError' ? new RangeError(reply.message) : new Error(reply.message), { name: reply.name }));
    this.dispatch();
  }

  private onWorkerDeath(slot: Slot, err: Error): void {
    const idx = this.slots.indexOf(slot);
    if (idx < 0) return;
    const job = this.finish(slot);
    job?.reject(new Error(`preprocess worker failed: ${err.message}`));
    if (this.closed) return;
    slot.worker.removeAllListeners();
    void slot.worker.terminate();
    if (++this.deathsSinceReply > 2 * this.size) {
      this.broken = new Error(`preprocess workers keep failing (last: ${err.message})`);
      for (const queued of this.queue.splice(0)) queued.reject(this.broken);
      this.slots.splice(idx, 1);
      return;
    }
    this.slots[idx] = this.spawn();
    this.dispatch();
  }
}
