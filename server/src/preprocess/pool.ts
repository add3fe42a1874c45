/**
 * A small pool of worker_threads for decode + preprocess (and tokenization), so that CPU-bound
 * work on untrusted input never blocks the server's event loop. Each worker runs one job at a
 * time. Jobs queue per submitter (the job's `owner`, an opaque caller identity, or else jobs
 * sharing an AbortSignal: one request's items) and the queues take turns, so a request of 256 long
 * texts delays another request's one text by one job, not by 256. With `maxWorkersPerOwner`, one
 * owner may run jobs on at most that many workers at once: with the rest free, another caller's job
 * starts at once instead of waiting for a flood's running jobs (and the flood cannot take every
 * core from the event loop and the encoders). Bytes go to the worker as a private copy (the caller's buffer may be a view into a larger
 * pooled buffer), the result comes back by transfer. A worker that dies fails
 * only its own job and is replaced.
 *
 * Cancellation: a job whose signal aborts while queued is removed and never starts. One already
 * running is answered at once (its caller is released) but its worker stays busy until the job
 * ends: libvips cannot interrupt a decoder mid-call (libwebp and libpng decode whole images in one
 * call), and terminating the thread would not stop the native work either, only add a respawn.
 * What bounds a running decode is the pixel limit checked from the header before it starts, and
 * the decode budget (libvips' timeout, checked as the pipeline progresses).
 */
import * as os from 'node:os';
import type { PreprocessConfig } from '../model/config';
import { compiledModule } from '../util/paths';
import type { ThreadPriority } from '../util/priority';
import { checkLimits, DEFAULT_IMAGE_LIMITS, ImageError, type ImageLimits } from './errors';
import { checkConfig } from './transform';
import { spawnChannel, type Isolation, type WorkerChannel } from './worker-channel';
import type { AugmentSpec, JobReply, JobRequest, WorkerInit } from './worker-protocol';

export interface PreprocessPoolOptions {
  /** Number of worker threads; default: the number of CPU cores. */
  size?: number;
  cfg: PreprocessConfig;
  /** The limits every image job is held to (default DEFAULT_IMAGE_LIMITS): fixed here, sent to
   *  the workers once, never per image. */
  limits?: ImageLimits;
  /** Decode budget of every image job in seconds (rounded up to whole seconds by libvips); absent or 0: none. */
  decodeTimeoutSeconds?: number;
  /** The tokenizer vocabulary (merges file or Hugging Face directory) for runText. */
  vocabPath?: string;
  /** CPU priority of the workers (default 'normal'; fine-tuning uses 'low'). */
  priority?: ThreadPriority;
  /** Worker threads (default) or child processes (background work: own heap bound, and the
   *  priority reaches libvips' decoding threads too; see worker-channel). */
  isolation?: Isolation;
  /** Child processes: their V8 heap bound in MiB (default 512). */
  heapMb?: number;
  /** Most workers running jobs of one owner at once (default: all). Jobs without an owner are not capped. */
  maxWorkersPerOwner?: number;
}

/** What one image job carries besides its bytes: who asked and how to cancel (the limits are the pool's). */
export interface ImageJobOptions {
  /** Aborting drops the job if it has not started, and releases the caller if it has. */
  signal?: AbortSignal;
  /** Who asked (an opaque caller identity): jobs queue and take turns per owner. */
  owner?: string;
  augment?: AugmentSpec;
}

export interface TokenizedText {
  ids: Int32Array;
  truncated: boolean;
  eotIndex: number;
}

/** Why a job was not run or not waited for. */
export class PoolJobAbortedError extends Error {
  constructor() {
    super('preprocessing job cancelled');
    this.name = 'PoolJobAbortedError';
  }
}

interface Job {
  request: JobRequest;
  owner?: string;
  transfer: ArrayBuffer[];
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve: (reply: JobReply & { ok: true }) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: WorkerChannel;
  job?: Job;
}

export class PreprocessPool {
  readonly size: number;
  private readonly init: WorkerInit;
  private readonly script: string;
  private readonly slots: Slot[] = [];
  private readonly queue = new FairQueue<Job>();
  /** Workers busy with each owner's jobs (owners with none are absent). */
  private readonly running = new Map<string, number>();
  private readonly maxWorkersPerOwner: number;
  private nextId = 1;
  private closed = false;
  private drained?: () => void;
  /** Worker deaths since the last reply; a worker that cannot even start (broken build, missing
   *  native module) must not be respawned in a tight loop. */
  private deathsSinceReply = 0;
  private broken?: Error;
  private readonly isolation: Isolation;
  private readonly heapMb: number;

  constructor(opts: PreprocessPoolOptions) {
    const size = opts.size ?? os.availableParallelism?.() ?? os.cpus().length;
    if (!Number.isInteger(size) || size < 1)
      throw new RangeError(`PreprocessPool size must be a positive integer, got ${size}`);
    this.size = size;
    checkConfig(opts.cfg); // fail at construction, not on every job
    this.init = {
      cfg: opts.cfg,
      limits: checkLimits(opts.limits ?? DEFAULT_IMAGE_LIMITS),
      timeoutSeconds: checkTimeout(opts.decodeTimeoutSeconds ?? 0),
      vocabPath: opts.vocabPath,
      priority: opts.priority,
    };
    this.script = compiledModule('preprocess/worker');
    this.isolation = opts.isolation ?? 'thread';
    this.heapMb = opts.heapMb ?? 512;
    this.maxWorkersPerOwner = opts.maxWorkersPerOwner ?? size;
    if (!Number.isInteger(this.maxWorkersPerOwner) || this.maxWorkersPerOwner < 1)
      throw new RangeError(`maxWorkersPerOwner must be a positive integer, got ${opts.maxWorkersPerOwner}`);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  /** The limits the workers enforce (for callers that price images by their headers first). */
  get limits(): ImageLimits {
    return this.init.limits;
  }

  /** Jobs waiting for a worker. */
  get queued(): number {
    return this.queue.size;
  }

  /** Preprocesses one image on a worker; rejects with ImageError for bad input. */
  async run(bytes: Uint8Array, opts: ImageJobOptions = {}): Promise<Float32Array> {
    const copy = new Uint8Array(bytes);
    const reply = await this.submit(
      { kind: 'image', id: 0, bytes: copy, augment: opts.augment },
      [copy.buffer as ArrayBuffer],
      opts.signal,
      opts.owner,
    );
    if (!('tensor' in reply)) throw new Error('preprocess worker answered an image job without a tensor');
    // Re-wrap in this realm's Float32Array (no copy): structured clone creates the view in the
    // main context, which differs from the caller's under vm sandboxes such as jest, where
    // `instanceof Float32Array` checks (onnxruntime's Tensor) would otherwise fail.
    return new Float32Array(reply.tensor.buffer, reply.tensor.byteOffset, reply.tensor.length);
  }

  /** Checks on a worker that an image decodes (headers, limits, every pixel); rejects with ImageError. */
  async verify(bytes: Uint8Array, opts: Pick<ImageJobOptions, 'signal'> = {}): Promise<void> {
    const copy = new Uint8Array(bytes);
    await this.submit(
      { kind: 'image', id: 0, bytes: copy, verifyOnly: true },
      [copy.buffer as ArrayBuffer],
      opts.signal,
    );
  }

  /** Tokenizes one text on a worker (open_clip ids, cut and padded to contextLength). */
  async runText(text: string, contextLength: number, signal?: AbortSignal, owner?: string): Promise<TokenizedText> {
    const reply = await this.submit({ kind: 'text', id: 0, text, contextLength }, [], signal, owner);
    if (!('ids' in reply)) throw new Error('preprocess worker answered a text job without ids');
    return {
      ids: new Int32Array(reply.ids.buffer, reply.ids.byteOffset, reply.ids.length),
      truncated: reply.truncated,
      eotIndex: reply.eotIndex,
    };
  }

  /** Rejects queued jobs, lets running ones finish, then stops the workers. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.drain()) this.release(job).reject(new Error('PreprocessPool is closed'));
    if (this.slots.some((s) => s.job)) await new Promise<void>((r) => (this.drained = r));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private submit(
    request: JobRequest,
    transfer: ArrayBuffer[],
    signal: AbortSignal | undefined,
    owner?: string,
  ): Promise<JobReply & { ok: true }> {
    if (this.closed) return Promise.reject(new Error('PreprocessPool is closed'));
    if (this.broken) return Promise.reject(this.broken);
    if (signal?.aborted) return Promise.reject(new PoolJobAbortedError());
    return new Promise((resolve, reject) => {
      request.id = this.nextId++;
      const job: Job = { request, owner, transfer, signal, resolve, reject };
      if (signal) {
        job.onAbort = () => this.abort(job);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.queue.push(this.queueKey(job), job);
      this.dispatch();
    });
  }

  /** Jobs take turns by owner, else by request (their shared signal), else each alone. */
  private queueKey(job: Job): object | string {
    return job.owner ?? job.signal ?? job;
  }

  /** A queued job leaves the queue; a running one is answered now and its reply ignored later. */
  private abort(job: Job): void {
    this.queue.remove(this.queueKey(job), job);
    this.release(job).reject(new PoolJobAbortedError());
  }

  /** Detaches the abort listener; settling twice is harmless (promises ignore it). */
  private release(job: Job): Job {
    if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
    job.onAbort = undefined;
    return job;
  }

  private spawn(): Slot {
    const worker = spawnChannel(this.script, this.init, this.isolation, this.heapMb);
    const slot: Slot = { worker };
    worker.unref(); // idle workers must not keep the process alive; ref'd while a job runs
    worker.onMessage((reply: JobReply) => this.onReply(slot, reply));
    worker.onError((err) => this.onWorkerDeath(slot, err));
    worker.onExit((code) => {
      if (!this.closed || slot.job) this.onWorkerDeath(slot, new Error(`preprocess worker exited with code ${code}`));
    });
    return slot;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.size === 0) return;
      if (slot.job) continue;
      // The next turn whose owner is below its worker cap (owners are strings; other keys are uncapped).
      const job = this.queue.shift(
        (key) => typeof key !== 'string' || (this.running.get(key) ?? 0) < this.maxWorkersPerOwner,
      );
      if (!job) return;
      if (job.owner !== undefined) this.running.set(job.owner, (this.running.get(job.owner) ?? 0) + 1);
      slot.job = job;
      slot.worker.ref();
      slot.worker.post(job.request, job.transfer);
    }
  }

  private finish(slot: Slot): Job | undefined {
    const job = slot.job;
    slot.job = undefined;
    if (job?.owner !== undefined) {
      const n = (this.running.get(job.owner) ?? 1) - 1;
      if (n > 0) this.running.set(job.owner, n);
      else this.running.delete(job.owner);
    }
    slot.worker.unref();
    if (this.closed && this.drained && !this.slots.some((s) => s.job)) this.drained();
    return job && this.release(job);
  }

  private onReply(slot: Slot, reply: JobReply): void {
    const job = slot.job;
    if (!job || job.request.id !== reply.id) return;
    this.deathsSinceReply = 0;
    this.finish(slot);
    if (reply.ok) job.resolve(reply);
    else if (reply.code) job.reject(new ImageError(reply.code, reply.message));
    else
      job.reject(
        Object.assign(reply.name === 'RangeError' ? new RangeError(reply.message) : new Error(reply.message), {
          name: reply.name,
        }),
      );
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
      for (const queued of this.queue.drain()) this.release(queued).reject(this.broken);
      this.slots.splice(idx, 1);
      return;
    }
    this.slots[idx] = this.spawn();
    this.dispatch();
  }
}

function checkTimeout(seconds: number): number {
  if (!Number.isFinite(seconds) || seconds < 0)
    throw new RangeError(`decodeTimeoutSeconds must be a non-negative number, got ${seconds}`);
  return seconds;
}

/** FIFO per key, keys served in turn (round robin). */
class FairQueue<T> {
  private readonly byKey = new Map<object | string, T[]>();
  private turn: (object | string)[] = [];
  size = 0;

  push(key: object | string, item: T): void {
    let list = this.byKey.get(key);
    if (!list) {
      list = [];
      this.byKey.set(key, list);
      this.turn.push(key);
    }
    list.push(item);
    this.size++;
  }

  /** The head of the first key in turn that `eligible` accepts; that key then goes to the back. */
  shift(eligible: (key: object | string) => boolean = () => true): T | undefined {
    const at = this.turn.findIndex(eligible);
    if (at < 0) return undefined;
    const [key] = this.turn.splice(at, 1);
    const list = this.byKey.get(key)!;
    const item = list.shift()!;
    this.size--;
    if (list.length > 0) this.turn.push(key);
    else this.byKey.delete(key);
    return item;
  }

  remove(key: object | string, item: T): void {
    const list = this.byKey.get(key);
    const at = list ? list.indexOf(item) : -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    this.size--;
    if (list.length === 0) {
      this.byKey.delete(key);
      this.turn = this.turn.filter((k) => k !== key);
    }
  }

  drain(): T[] {
    const all = this.turn.flatMap((k) => this.byKey.get(k) ?? []);
    this.byKey.clear();
    this.turn = [];
    this.size = 0;
    return all;
  }
}
