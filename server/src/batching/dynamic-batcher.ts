/**
 * A dynamic batcher in the style of Triton's dynamic batcher and text-embeddings-inference's
 * queue: items from many callers are admitted into one bounded queue, prepared as soon as they
 * arrive (so image decoding for the next batch overlaps the current inference run), merged into
 * runs of at most `maxBatchSize` and scattered back to their callers.
 *
 * Life of an item: pending (admitted, waiting for a preparation slot) → preparing → ready (waiting
 * for a batch) → running → settled. A run starts when `maxBatchSize` items are ready, or when the
 * oldest ready item has waited `maxQueueDelayMs`, and never while another run of this batcher is in
 * flight (one encoder session per modality; items arriving meanwhile form the next batch).
 *
 * The queue (pending + preparing + ready) is bounded by `queueBound` items: a submission that would
 * overflow it is refused at once, whole, with QueueFullError. Items whose caller aborted or whose
 * deadline passed are dropped before inference and their room is freed immediately, and the signal
 * handed to prepare() aborts, so work queued for them elsewhere (the decode pool) is dropped too.
 *
 * With `costOf`, the queue is also bounded by cost (an image's declared pixels, a text's length):
 * an item's cost is held from admission until its preparation ends (or it is dropped before
 * starting), so a few cheap-looking requests cannot queue minutes of decoding or tokenizing.
 *
 * Fairness across callers (SubmitOptions.key, an opaque string): items start preparing and join
 * batches by turns across keys (KeyedQueue), so one caller's flood queues behind itself; and with
 * `keyShare` < 1, while other keys have items queued, a key that already has items queued may hold
 * at most that share of the item and cost bounds (a key with nothing queued is always admitted
 * within the global bounds, so any valid request can run; a lone key may use the whole queue). A
 * key over its share gets KeyShareExceededError; the others keep their room.
 */
import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import {
  BatcherClosedError,
  BatcherError,
  CancelledError,
  DeadlineExceededError,
  InferenceError,
  KeyShareExceededError,
  QueueFullError,
} from './errors';
import { Fifo } from './fifo';
import { KeyedQueue } from './keyed-queue';
import type { BatcherObserver, Modality, RejectReason, SubmitOptions } from './types';

export interface DynamicBatcherOptions<In, Prepared, Out> {
  modality: Modality;
  /** Most items one run takes. */
  maxBatchSize: number;
  /** Longest a ready item waits for companions before a smaller batch runs. */
  maxQueueDelayMs: number;
  /** Most items admitted and not yet running. */
  queueBound: number;
  /**
   * Per-item work done on admission, concurrently with inference (image decode in a worker pool).
   * A rejection fails only that item. Without it, inputs go to inference as they are (In must
   * then be Prepared).
   */
  prepare?: (input: In, signal: AbortSignal, key: string) => Promise<Prepared> | Prepared;
  /** The admission cost of an input (an image's declared pixels); needs costBound. */
  costOf?: (input: In) => number;
  /** Most cost admitted and not yet prepared; a submission that would exceed it is refused whole. */
  costBound?: number;
  /** What the cost counts, for error messages (default 'pixels queued for decoding'). */
  costUnit?: string;
  /**
   * The fraction (0, 1] of queueBound and costBound one key may hold while it and another key have
   * items queued (default 1: no per-key limit beyond the global bounds).
   */
  keyShare?: number;
  /**
   * How many items may be preparing or prepared-and-waiting at once (default 2 × maxBatchSize:
   * the next batch plus one more). Bounds the memory held by prepared tensors; further admitted
   * items wait holding only their raw input.
   */
  prepareAhead?: number;
  /** The batched inference: one output per input, in order. A rejection fails the whole batch. */
  run: (batch: Prepared[]) => Promise<Out[]>;
  observer?: BatcherObserver;
  /** The observer's reject reason for a prepare() failure (default 'bad_image'). */
  rejectReasonOf?: (err: unknown) => RejectReason;
}

/** What one key holds in the queue. */
interface KeyAccount {
  items: number;
  cost: number;
}

type ItemState = 'pending' | 'preparing' | 'ready' | 'running' | 'settled';

interface Item<In, Prepared, Out> {
  state: ItemState;
  input: In | undefined;
  prepared: Prepared | undefined;
  admittedAt: number;
  readyAt: number;
  /** Cost still held against costBound (0 once released). */
  cost: number;
  /** The submitting caller's key ('' when anonymous) and its account of queued items and cost. */
  key: string;
  account: KeyAccount;
  group: Group;
  resolve: (out: Out) => void;
  reject: (err: unknown) => void;
}

/** The items of one submission: they share a deadline, an abort signal and their listeners. */
interface Group {
  deadline: number | undefined;
  signal: AbortSignal | undefined;
  unsettled: number;
  cleanup: () => void;
  /** Aborted when the group's items are dropped (cancel, deadline, close): stops their preparation. */
  abort: AbortController;
}

export interface BatcherStats {
  /** Inference runs started since creation. */
  runs: number;
  /** Items admitted and not yet running. */
  depth: number;
  /** Items in the run now in flight (0 when idle). */
  inFlight: number;
  /** Cost admitted and not yet prepared (0 without costOf). */
  cost: number;
  /** Distinct callers (keys) with items queued. */
  callers: number;
}

export class DynamicBatcher<In, Prepared = In, Out = Prepared> {
  readonly modality: Modality;
  private readonly maxBatchSize: number;
  private readonly maxQueueDelayMs: number;
  private readonly queueBound: number;
  private readonly prepareAhead: number;
  private readonly pending = new KeyedQueue<Item<In, Prepared, Out>>();
  /** Ready items in arrival order: only the oldest one's age is read from it (batch timing). */
  private readonly ready = new Fifo<Item<In, Prepared, Out>>();
  /** The same ready items by key: batches are filled from it in turns. */
  private readonly readyByKey = new KeyedQueue<Item<In, Prepared, Out>>();
  /** Items queued (not yet running) and cost held, per key; a key leaves the map at zero items. */
  private readonly held = new Map<string, KeyAccount>();
  private readonly keyShare: number;
  /** When two or more keys last had items queued at once (performance.now()). */
  private sharedAt = Number.NEGATIVE_INFINITY;
  private readyLive = 0;
  private preparing = 0;
  private depth = 0;
  private queuedCost = 0;
  private inFlight = 0;
  private runs = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: DynamicBatcherOptions<In, Prepared, Out>) {
    this.modality = opts.modality;
    this.maxBatchSize = positiveInt('maxBatchSize', opts.maxBatchSize);
    this.queueBound = positiveInt('queueBound', opts.queueBound);
    this.prepareAhead = opts.prepare
      ? positiveInt('prepareAhead', opts.prepareAhead ?? 2 * this.maxBatchSize)
      : Number.POSITIVE_INFINITY;
    if (!(Number.isFinite(opts.maxQueueDelayMs) && opts.maxQueueDelayMs >= 0)) {
      throw new RangeError(`maxQueueDelayMs must be a finite number >= 0, got ${opts.maxQueueDelayMs}`);
    }
    this.maxQueueDelayMs = opts.maxQueueDelayMs;
    this.keyShare = opts.keyShare ?? 1;
    if (!(this.keyShare > 0 && this.keyShare <= 1))
      throw new RangeError(`keyShare must be in (0, 1], got ${opts.keyShare}`);
  }

  stats(): BatcherStats {
    return {
      runs: this.runs,
      depth: this.depth,
      inFlight: this.inFlight,
      cost: this.queuedCost,
      callers: this.held.size,
    };
  }

  /**
   * True when `key` already holds its share of the items or cost bound while another key has items
   * queued, or had within the last `sharedWithinMs`: its next submission would be refused
   * (KeyShareExceededError) if the others are back by then, so a caller can be turned away before
   * its request is even decoded (decoding takes longer than a well-behaved caller's item stays
   * queued, so "queued right now" alone would rarely catch it).
   */
  holdsShare(key: string, sharedWithinMs = 0): boolean {
    const mine = this.held.get(key);
    if (!mine || this.keyShare >= 1) return false;
    if (this.held.size < 2 && performance.now() - this.sharedAt > sharedWithinMs) return false;
    const share = this.share();
    return mine.items >= share.items || (mine.cost > 0 && mine.cost >= share.cost);
  }

  /** One key's share of the item and cost bounds while the queue is shared (at least one item). */
  private share(): { items: number; cost: number } {
    const costBound = this.opts.costBound ?? Number.POSITIVE_INFINITY;
    return {
      items: Math.max(1, Math.floor(this.keyShare * this.queueBound)),
      cost: Math.floor(this.keyShare * costBound),
    };
  }

  /** Submits one item; see submitMany. */
  submit(input: In, options: SubmitOptions = {}): Promise<Out> {
    return this.submitMany([input], options)[0];
  }

  /**
   * Admits all `inputs` or none: throws QueueFullError (or BatcherClosedError, or CancelledError /
   * DeadlineExceededError when the call is already dead) synchronously if they cannot all be
   * queued. Returns one promise per input, settled independently: a bad item fails alone.
   */
  submitMany(inputs: readonly In[], options: SubmitOptions = {}): Promise<Out>[] {
    if (this.closed) throw new BatcherClosedError(this.modality);
    const n = inputs.length;
    if (n === 0) return [];
    if (deadlinePassed(options.deadline)) {
      this.rejectCount('deadline', n);
      throw new DeadlineExceededError(this.modality);
    }
    if (options.signal?.aborted) {
      this.rejectCount('cancelled', n);
      throw new CancelledError(this.modality);
    }
    if (this.depth + n > this.queueBound) {
      this.rejectCount('overload', n);
      throw new QueueFullError(this.modality, this.depth, n, this.queueBound);
    }
    const costs = inputs.map((input) => (this.opts.costOf ? this.opts.costOf(input) : 0));
    const cost = costs.reduce((a, b) => a + b, 0);
    const costBound = this.opts.costBound ?? Number.POSITIVE_INFINITY;
    const costUnit = this.opts.costUnit ?? 'pixels queued for decoding';
    // An empty queue admits any one submission (its size is the per-request budget's business).
    if (cost > 0 && this.queuedCost > 0 && this.queuedCost + cost > costBound) {
      this.rejectCount('overload', n);
      throw new QueueFullError(this.modality, this.queuedCost, cost, costBound, costUnit);
    }
    const key = options.key ?? '';
    const mine = this.held.get(key);
    // The share binds only while the queue is shared: a lone caller (one client, a batch job) may
    // use the whole queue, and is held to its share as soon as another caller has items queued.
    if (mine && this.keyShare < 1 && this.held.size > 1) {
      const share = this.share();
      if (mine.items + n > share.items) {
        this.rejectCount('key_share', n);
        throw new KeyShareExceededError(this.modality, mine.items, n, share.items, 'items queued');
      }
      if (cost > 0 && mine.cost > 0 && mine.cost + cost > share.cost) {
        this.rejectCount('key_share', n);
        throw new KeyShareExceededError(this.modality, mine.cost, cost, share.cost, costUnit);
      }
    }

    const account: KeyAccount = mine ?? { items: 0, cost: 0 };
    const group: Group = {
      deadline: options.deadline,
      signal: options.signal,
      unsettled: n,
      cleanup: () => undefined,
      abort: new AbortController(),
    };
    // One listener per item preparing elsewhere (up to a request's size): not a leak.
    setMaxListeners(0, group.abort.signal);
    const items: Item<In, Prepared, Out>[] = [];
    const promises = inputs.map(
      (input, i) =>
        new Promise<Out>((resolve, reject) => {
          const now = performance.now();
          items.push({
            state: 'pending',
            input,
            prepared: undefined,
            admittedAt: now,
            readyAt: now,
            cost: costs[i],
            key,
            account,
            group,
            resolve,
            reject,
          });
        }),
    );
    this.queuedCost += cost;
    account.items += n;
    account.cost += cost;
    this.held.set(key, account);
    if (this.held.size > 1) this.sharedAt = performance.now();
    if (!mine) this.notifyCallers();
    this.armGroup(group, items);
    for (const item of items) this.pending.push(key, item);
    this.depth += n;
    this.notifyDepth();
    this.pump();
    return promises;
  }

  /** Resolves once nothing is queued or running. */
  whenIdle(): Promise<void> {
    if (this.depth === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Refuses new submissions and fails every queued item with BatcherClosedError. A run in flight
   * finishes and delivers its results.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const queue of [this.pending, this.readyByKey]) {
      for (let item = queue.shift(); item; item = queue.shift()) {
        if (item.state === 'pending' || item.state === 'ready')
          this.dropQueued(item, new BatcherClosedError(this.modality), undefined);
      }
    }
    while (this.ready.shift());
    // Items still preparing are dropped when their preparation settles (state check there).
  }

  // ---- internals -------------------------------------------------------------------------------

  /** Abort and deadline watchers, one pair per submission, removed when its last item settles. */
  private armGroup(group: Group, items: Item<In, Prepared, Out>[]): void {
    const failAll = (errOf: () => BatcherError, reason: RejectReason): void => {
      group.abort.abort();
      for (const item of items) {
        if (item.state === 'settled') continue;
        if (item.state === 'running') this.settle(item, errOf());
        else this.dropQueued(item, errOf(), reason);
      }
      this.notifyDepth();
      this.scheduleRun();
    };
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    if (group.signal) {
      // Transports often signal an expired deadline as a cancellation (grpc-js emits 'cancelled'
      // when its deadline timer fires, just before ours would); classify by the clock.
      onAbort = () =>
        deadlinePassed(group.deadline)
          ? failAll(() => new DeadlineExceededError(this.modality), 'deadline')
          : failAll(() => new CancelledError(this.modality), 'cancelled');
      group.signal.addEventListener('abort', onAbort, { once: true });
    }
    // setTimeout fires at once for delays beyond 2^31-1 ms; such far deadlines need no timer.
    if (group.deadline !== undefined && group.deadline - Date.now() < MAX_TIMER_MS) {
      timer = setTimeout(
        () => failAll(() => new DeadlineExceededError(this.modality), 'deadline'),
        Math.max(0, group.deadline - Date.now()),
      );
      timer.unref();
    }
    group.cleanup = () => {
      if (timer) clearTimeout(timer);
      if (onAbort) group.signal?.removeEventListener('abort', onAbort);
    };
  }

  private settle(item: Item<In, Prepared, Out>, err: unknown, out?: Out): void {
    if (item.state === 'settled') return;
    item.state = 'settled';
    item.input = undefined;
    item.prepared = undefined;
    if (err === undefined) item.resolve(out as Out);
    else item.reject(err);
    if (--item.group.unsettled === 0) item.group.cleanup();
  }

  /** Removes a not-yet-running item from the queue accounting and fails it. */
  private dropQueued(item: Item<In, Prepared, Out>, err: unknown, reason: RejectReason | undefined): void {
    if (item.state === 'ready') this.readyLive--;
    // A pending item never cost anything; a preparing one releases its cost when prepare() ends.
    if (item.state === 'pending') this.releaseCost(item);
    // A preparing item keeps its preparation slot until prepare() settles; it is skipped then.
    this.depth--;
    this.leaveQueue(item);
    if (reason) this.observe((o) => o.itemRejected(this.modality, reason));
    this.settle(item, err);
    this.checkIdle();
  }

  private releaseCost(item: Item<In, Prepared, Out>): void {
    this.queuedCost -= item.cost;
    item.account.cost -= item.cost;
    item.cost = 0;
  }

  /** The item no longer counts against its key's share of the queue (it runs, or was dropped). */
  private leaveQueue(item: Item<In, Prepared, Out>): void {
    // The account object travels with the item: a late release never touches a newer account.
    if (--item.account.items === 0 && this.held.get(item.key) === item.account) {
      if (this.held.size > 1) this.sharedAt = performance.now();
      this.held.delete(item.key);
      this.notifyCallers();
    }
  }

  private rejectCount(reason: RejectReason, n: number): void {
    for (let i = 0; i < n; i++) this.observe((o) => o.itemRejected(this.modality, reason));
  }

  private expiry(item: Item<In, Prepared, Out>): CancelledError | DeadlineExceededError | undefined {
    if (deadlinePassed(item.group.deadline)) return new DeadlineExceededError(this.modality);
    if (item.group.signal?.aborted) return new CancelledError(this.modality);
    return undefined;
  }

  /** Starts preparations while there is room ahead of inference, then considers a run. */
  private pump(): void {
    while (this.preparing + this.readyLive < this.prepareAhead) {
      const item = this.pending.shift();
      if (!item) break;
      if (item.state !== 'pending') continue; // dropped while waiting
      const dead = this.expiry(item);
      if (dead) {
        this.dropQueued(item, dead, dead.reason);
        this.notifyDepth();
        continue;
      }
      this.startPrepare(item);
    }
    this.scheduleRun();
  }

  private startPrepare(item: Item<In, Prepared, Out>): void {
    const prepare = this.opts.prepare;
    if (!prepare) {
      item.prepared = item.input as unknown as Prepared;
      item.input = undefined;
      this.releaseCost(item);
      this.markReady(item);
      return;
    }
    item.state = 'preparing';
    this.preparing++;
    const input = item.input as In;
    item.input = undefined;
    const t0 = performance.now();
    const signal = item.group.abort.signal;
    Promise.resolve()
      .then(() => prepare(input, signal, item.key))
      .then(
        (prepared) => {
          this.preparing--;
          this.releaseCost(item);
          this.observe((o) => o.preprocessed(this.modality, (performance.now() - t0) / 1000));
          if (item.state !== 'preparing') return void this.pump(); // dropped meanwhile
          if (this.closed) {
            this.dropQueued(item, new BatcherClosedError(this.modality), undefined);
            this.notifyDepth();
            return;
          }
          item.prepared = prepared;
          this.markReady(item);
          this.pump();
        },
        (err: unknown) => {
          this.preparing--;
          this.releaseCost(item);
          this.observe((o) => o.preprocessed(this.modality, (performance.now() - t0) / 1000));
          if (item.state === 'preparing') {
            const reason = this.opts.rejectReasonOf ? this.opts.rejectReasonOf(err) : 'bad_image';
            this.dropQueued(item, err, reason);
            this.notifyDepth();
          }
          this.pump();
        },
      );
  }

  private markReady(item: Item<In, Prepared, Out>): void {
    item.state = 'ready';
    item.readyAt = performance.now();
    this.ready.push(item);
    this.readyByKey.push(item.key, item);
    this.readyLive++;
  }

  /** Runs now if a batch is full or its oldest item waited long enough; else arms the delay timer. */
  private scheduleRun(): void {
    if (this.inFlight > 0 || this.closed) return;
    while (this.ready.length > 0 && this.ready.peek()!.state !== 'ready') this.ready.shift();
    if (this.readyLive === 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      return;
    }
    const waited = performance.now() - this.ready.peek()!.readyAt;
    if (this.readyLive >= this.maxBatchSize || waited >= this.maxQueueDelayMs) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      void this.runBatch();
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.scheduleRun();
        },
        Math.max(0, Math.ceil(this.maxQueueDelayMs - waited)),
      );
    }
  }

  private async runBatch(): Promise<void> {
    const batch: Item<In, Prepared, Out>[] = [];
    while (batch.length < this.maxBatchSize) {
      const item = this.readyByKey.shift();
      if (!item) break;
      if (item.state !== 'ready') continue;
      const dead = this.expiry(item);
      if (dead) {
        this.dropQueued(item, dead, dead.reason);
        continue;
      }
      item.state = 'running';
      this.readyLive--;
      this.leaveQueue(item);
      batch.push(item);
    }
    this.depth -= batch.length;
    this.notifyDepth();
    if (batch.length === 0) {
      this.pump();
      return;
    }

    this.inFlight = batch.length;
    this.runs++;
    const start = performance.now();
    const waits = batch.map((item) => (start - item.admittedAt) / 1000);
    const inputs = batch.map((item) => item.prepared as Prepared);
    for (const item of batch) item.prepared = undefined;
    // Room freed by taking this batch lets more items start preparing during inference.
    this.pump();
    try {
      const outs = await this.opts.run(inputs);
      if (!Array.isArray(outs) || outs.length !== batch.length) {
        throw new Error(
          `encoder returned ${Array.isArray(outs) ? outs.length : typeof outs} outputs for a batch of ${batch.length}`,
        );
      }
      const seconds = (performance.now() - start) / 1000;
      this.observe((o) => o.batchRun(this.modality, batch.length, waits, seconds));
      this.observe((o) => o.embedded(this.modality, batch.length));
      batch.forEach((item, i) => this.settle(item, undefined, outs[i]));
    } catch (err) {
      const failure = new InferenceError(this.modality, err);
      for (const item of batch) this.settle(item, failure);
    } finally {
      this.inFlight = 0;
      this.checkIdle();
      this.pump();
    }
  }

  private notifyCallers(): void {
    this.observe((o) => o.queueCallers?.(this.modality, this.held.size));
  }

  private notifyDepth(): void {
    this.observe((o) => o.queueDepth(this.modality, this.depth));
  }

  private checkIdle(): void {
    if (this.depth !== 0 || this.inFlight !== 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Observer failures are the observer's bug; they must not fail callers or wedge the queue. */
  private observe(fn: (o: BatcherObserver) => void): void {
    const o = this.opts.observer;
    if (!o) return;
    try {
      fn(o);
    } catch {
      /* ignored on purpose: see above */
    }
  }
}

const MAX_TIMER_MS = 2 ** 31 - 1;
/** Timers may fire a millisecond early against Date.now(); within this slack a deadline counts as passed. */
const DEADLINE_SLACK_MS = 5;

function deadlinePassed(deadline: number | undefined): boolean {
  return deadline !== undefined && Date.now() >= deadline - DEADLINE_SLACK_MS;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}
