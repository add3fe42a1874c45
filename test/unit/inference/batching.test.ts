/**
 * The dynamic batcher on its own, with a deterministic in-test encoder (each output is a function
 * of its input only, so a result proves it was scattered back to the right caller).
 */
import {
  BatcherClosedError,
  BatcherObserver,
  CancelledError,
  DeadlineExceededError,
  DynamicBatcher,
  InferenceError,
  KeyShareExceededError,
  Modality,
  QueueFullError,
  RejectReason,
} from '../../../server/src/batching';

/** Records every observer call. */
class RecordingObserver implements BatcherObserver {
  depths: number[] = [];
  runs: { size: number; waits: number[]; seconds: number }[] = [];
  rejected: RejectReason[] = [];
  preprocessedCount = 0;
  embeddedCount = 0;
  queueDepth(_m: Modality, depth: number): void {
    this.depths.push(depth);
  }
  batchRun(_m: Modality, size: number, waits: number[], seconds: number): void {
    this.runs.push({ size, waits, seconds });
  }
  itemRejected(_m: Modality, reason: RejectReason): void {
    this.rejected.push(reason);
  }
  preprocessed(): void {
    this.preprocessedCount++;
  }
  embedded(_m: Modality, count: number): void {
    this.embeddedCount += count;
  }
}

/** A promise whose settlement the test controls. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const encode = (x: number) => x * 2 + 1;

function makeBatcher(over: Partial<ConstructorParameters<typeof DynamicBatcher<number, number, number>>[0]> = {}) {
  const observer = new RecordingObserver();
  const batches: number[][] = [];
  const batcher = new DynamicBatcher<number, number, number>({
    modality: 'text',
    maxBatchSize: 8,
    maxQueueDelayMs: 5,
    queueBound: 64,
    prepare: (x) => x,
    run: async (xs) => {
      batches.push([...xs]);
      await sleep(2);
      return xs.map(encode);
    },
    observer,
    ...over,
  });
  return { batcher, observer, batches };
}

describe('DynamicBatcher', () => {
  test('merges concurrent single-item calls into full batches and scatters results back', async () => {
    const { batcher, observer, batches } = makeBatcher({ maxBatchSize: 32, queueBound: 1024 });
    const inputs = Array.from({ length: 64 }, (_, i) => i);
    const results = await Promise.all(inputs.map((x) => batcher.submit(x)));
    expect(results).toEqual(inputs.map(encode));
    expect(batcher.stats().runs).toBeLessThanOrEqual(Math.ceil(64 / 32) + 1);
    expect(batches.every((b) => b.length <= 32)).toBe(true);
    expect(batches.flat().sort((a, b) => a - b)).toEqual(inputs);
    expect(observer.embeddedCount).toBe(64);
    expect(observer.runs.reduce((n, r) => n + r.size, 0)).toBe(64);
    expect(observer.runs.every((r) => r.waits.length === r.size && r.seconds >= 0)).toBe(true);
    expect(observer.depths[observer.depths.length - 1]).toBe(0);
  });

  test('a lone item runs after maxQueueDelayMs without waiting for a full batch', async () => {
    const { batcher } = makeBatcher({ maxBatchSize: 32, maxQueueDelayMs: 30 });
    const t0 = Date.now();
    await expect(batcher.submit(7)).resolves.toBe(encode(7));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(25);
    expect(took).toBeLessThan(2000);
  });

  test('a full batch runs at once, without the queue delay', async () => {
    const { batcher } = makeBatcher({ maxBatchSize: 4, maxQueueDelayMs: 5000 });
    const t0 = Date.now();
    await Promise.all(batcher.submitMany([1, 2, 3, 4]));
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test('a submission that would overflow the queue is refused whole, at once', async () => {
    const hold = gate();
    const { batcher, observer } = makeBatcher({
      maxBatchSize: 2,
      queueBound: 4,
      run: async (xs) => {
        await hold.promise;
        return xs.map(encode);
      },
    });
    const first = batcher.submitMany([1, 2]); // taken into the running batch
    await sleep(20);
    const queued = batcher.submitMany([3, 4, 5, 6]); // fills the queue while the run holds
    expect(batcher.stats().depth).toBe(4);
    expect(() => batcher.submit(7)).toThrow(QueueFullError);
    expect(() => batcher.submitMany([7, 8])).toThrow(/queue is full/);
    expect(observer.rejected.filter((r) => r === 'overload')).toHaveLength(3);
    hold.open();
    await expect(Promise.all([...first, ...queued])).resolves.toEqual([1, 2, 3, 4, 5, 6].map(encode));
    // Room again once drained.
    await expect(batcher.submit(9)).resolves.toBe(encode(9));
  });

  test('aborted items are dropped before inference and free their room at once', async () => {
    const hold = gate();
    const { batcher, observer, batches } = makeBatcher({
      maxBatchSize: 2,
      queueBound: 3,
      run: async (xs) => {
        batches.push([...xs]);
        await hold.promise;
        return xs.map(encode);
      },
    });
    const running = batcher.submitMany([1, 2]);
    await sleep(20);
    const ac = new AbortController();
    const doomed = batcher.submitMany([10, 11, 12], { signal: ac.signal });
    expect(() => batcher.submit(13)).toThrow(QueueFullError);
    const settled = Promise.allSettled(doomed);
    ac.abort();
    for (const r of await settled) expect(r.status === 'rejected' && r.reason).toBeInstanceOf(CancelledError);
    expect(batcher.stats().depth).toBe(0);
    const after = batcher.submit(14);
    hold.open();
    await expect(Promise.all(running)).resolves.toEqual([encode(1), encode(2)]);
    await expect(after).resolves.toBe(encode(14));
    expect(batches.flat()).not.toContain(10);
    expect(batches.flat()).not.toContain(11);
    expect(observer.rejected.filter((r) => r === 'cancelled')).toHaveLength(3);
  });

  test('items whose deadline passes while queued are dropped with DeadlineExceededError', async () => {
    const hold = gate();
    const { batcher, observer, batches } = makeBatcher({
      maxBatchSize: 1,
      run: async (xs) => {
        batches.push([...xs]);
        await hold.promise;
        return xs.map(encode);
      },
    });
    const running = batcher.submit(1);
    await sleep(10);
    const late = batcher.submit(2, { deadline: Date.now() + 30 });
    await expect(late).rejects.toBeInstanceOf(DeadlineExceededError);
    hold.open();
    await expect(running).resolves.toBe(encode(1));
    await batcher.whenIdle();
    expect(batches).toEqual([[1]]);
    expect(observer.rejected).toEqual(['deadline']);
  });

  test('an already-dead call is refused at admission', () => {
    const { batcher } = makeBatcher();
    const ac = new AbortController();
    ac.abort();
    expect(() => batcher.submit(1, { signal: ac.signal })).toThrow(CancelledError);
    expect(() => batcher.submit(1, { deadline: Date.now() - 1 })).toThrow(DeadlineExceededError);
  });

  test('preparation of the next batch overlaps the running inference', async () => {
    const hold = gate();
    const prepared: number[] = [];
    const { batcher } = makeBatcher({
      maxBatchSize: 2,
      prepare: async (x) => {
        prepared.push(x);
        return x;
      },
      run: async (xs) => {
        if (xs.includes(1)) await hold.promise;
        return xs.map(encode);
      },
    });
    const a = batcher.submitMany([1, 2]);
    await sleep(10);
    const b = batcher.submitMany([3, 4]);
    await sleep(10);
    // The first run is still held, yet the second batch is already prepared.
    expect(prepared).toEqual([1, 2, 3, 4]);
    expect(batcher.stats().inFlight).toBe(2);
    hold.open();
    await expect(Promise.all([...a, ...b])).resolves.toEqual([1, 2, 3, 4].map(encode));
  });

  test('prepareAhead bounds how many items are prepared ahead of inference', async () => {
    const hold = gate();
    let preparedCount = 0;
    const { batcher } = makeBatcher({
      maxBatchSize: 2,
      prepareAhead: 3,
      queueBound: 100,
      prepare: (x) => {
        preparedCount++;
        return x;
      },
      run: async (xs) => {
        await hold.promise;
        return xs.map(encode);
      },
    });
    const all = batcher.submitMany(Array.from({ length: 20 }, (_, i) => i));
    await sleep(30);
    // 2 in the held run + at most 3 prepared ahead.
    expect(preparedCount).toBe(5);
    hold.open();
    await expect(Promise.all(all)).resolves.toEqual(Array.from({ length: 20 }, (_, i) => encode(i)));
  });

  test('a failed preparation fails only its item, with the mapped reject reason', async () => {
    const { batcher, observer } = makeBatcher({
      prepare: (x) => {
        if (x < 0) throw new Error(`bad input ${x}`);
        return x;
      },
      rejectReasonOf: () => 'too_large',
    });
    const [a, b, c] = await Promise.allSettled(batcher.submitMany([1, -1, 3]));
    expect(a).toEqual({ status: 'fulfilled', value: encode(1) });
    expect(b.status === 'rejected' && (b.reason as Error).message).toBe('bad input -1');
    expect(c).toEqual({ status: 'fulfilled', value: encode(3) });
    expect(observer.rejected).toEqual(['too_large']);
    expect(observer.preprocessedCount).toBe(3);
  });

  test('an encoder failure fails its batch with InferenceError and the batcher keeps serving', async () => {
    let fail = true;
    const { batcher } = makeBatcher({
      run: async (xs) => {
        if (fail) {
          fail = false;
          throw new Error('boom');
        }
        return xs.map(encode);
      },
    });
    await expect(batcher.submit(1)).rejects.toBeInstanceOf(InferenceError);
    await expect(batcher.submit(2)).resolves.toBe(encode(2));
  });

  test('an encoder returning the wrong number of outputs is an error, not a misaligned scatter', async () => {
    const { batcher } = makeBatcher({ run: async (xs) => xs.slice(1).map(encode) });
    const all = await Promise.allSettled(batcher.submitMany([1, 2]));
    for (const r of all) expect(r.status === 'rejected' && String(r.reason)).toMatch(/outputs for a batch of/);
  });

  test('close() fails queued items and refuses new ones; the running batch completes', async () => {
    const hold = gate();
    const { batcher } = makeBatcher({
      maxBatchSize: 1,
      run: async (xs) => {
        await hold.promise;
        return xs.map(encode);
      },
    });
    const running = batcher.submit(1);
    await sleep(10);
    const queued = batcher.submit(2);
    batcher.close();
    await expect(queued).rejects.toBeInstanceOf(BatcherClosedError);
    expect(() => batcher.submit(3)).toThrow(BatcherClosedError);
    hold.open();
    await expect(running).resolves.toBe(encode(1));
    await batcher.whenIdle();
  });

  test('an observer that throws does not disturb results', async () => {
    const throwing: BatcherObserver = {
      queueDepth: () => {
        throw new Error('observer bug');
      },
      batchRun: () => {
        throw new Error('observer bug');
      },
      itemRejected: () => undefined,
      preprocessed: () => undefined,
      embedded: () => {
        throw new Error('observer bug');
      },
    };
    const { batcher } = makeBatcher({ observer: throwing });
    await expect(Promise.all(batcher.submitMany([1, 2, 3]))).resolves.toEqual([1, 2, 3].map(encode));
  });

  test('rejects nonsensical options', () => {
    expect(() => makeBatcher({ maxBatchSize: 0 })).toThrow(RangeError);
    expect(() => makeBatcher({ queueBound: 1.5 })).toThrow(RangeError);
    expect(() => makeBatcher({ maxQueueDelayMs: -1 })).toThrow(RangeError);
  });
});

describe('DynamicBatcher admission by cost (issue 13)', () => {
  test('the batcher refuses a submission whose cost would overflow the bound, and aborts the preparation of dropped items', async () => {
    const signals: AbortSignal[] = [];
    const gates: (() => void)[] = [];
    const { batcher } = makeBatcher({
      maxQueueDelayMs: 0,
      costOf: (pixels) => pixels,
      costBound: 1000,
      prepare: (v, signal) => {
        signals.push(signal);
        return new Promise((resolve) => gates.push(() => resolve(v)));
      },
    });
    const ctl = new AbortController();
    const first = batcher.submitMany([600, 300], { signal: ctl.signal });
    expect(batcher.stats().cost).toBe(900);
    expect(() => batcher.submitMany([200])).toThrow(QueueFullError);
    expect(() => batcher.submitMany([200])).toThrow(/pixels queued for decoding/);
    ctl.abort();
    await Promise.all(first.map((p) => expect(p).rejects.toThrow(/cancel/i)));
    expect(signals.every((s) => s.aborted)).toBe(true);
    gates.forEach((g) => g());
    // The dropped items' cost is held until their preparation (the decode) actually ends.
    await new Promise((r) => setImmediate(r));
    expect(batcher.stats().cost).toBe(0);
    const later = batcher.submitMany([200])[0];
    await new Promise((r) => setImmediate(r));
    gates[gates.length - 1]();
    await expect(later).resolves.toBe(encode(200));
    batcher.close();
  });
});

describe('DynamicBatcher per-caller fairness (issue 13)', () => {
  /** A batcher whose first run is held until `release()`, so that queues can build up behind it. */
  function heldBatcher(over: Partial<ConstructorParameters<typeof DynamicBatcher<number, number, number>>[0]> = {}) {
    const held = gate();
    let first = true;
    const batches: number[][] = [];
    const run = async (xs: number[]) => {
      batches.push([...xs]);
      if (first) {
        first = false;
        await held.promise;
      }
      return xs.map(encode);
    };
    const { batcher, observer } = makeBatcher({ maxBatchSize: 4, maxQueueDelayMs: 0, run, ...over });
    return { batcher, batches, observer, release: held.open };
  }
  const tick = () => new Promise((r) => setImmediate(r));

  test('batches take callers in turns: a flood queues behind itself', async () => {
    // Every item is prepared at once (as texts are): the turns decide the batches. (With a smaller
    // prepareAhead, items already prepared run first: a later caller waits for at most that window.)
    const { batcher, batches, release } = heldBatcher({ prepareAhead: 64 });
    const blocker = batcher.submit(1000, { key: 'z' });
    await tick(); // the blocker's run starts and is held
    const flood = batcher.submitMany(
      Array.from({ length: 16 }, (_, i) => i),
      { key: 'a' },
    );
    const polite = batcher.submitMany([500, 501], { key: 'b' });
    await tick();
    release();
    await Promise.all([blocker, ...flood, ...polite]);
    // The batch after the blocker alternates a and b, so b's two items are in it, not after
    // a's sixteen.
    expect(batches[1]).toEqual([0, 500, 1, 501]);
    expect(batches.slice(2).flat()).toEqual(Array.from({ length: 14 }, (_, i) => i + 2));
    await expect(Promise.all(polite)).resolves.toEqual([encode(500), encode(501)]);
  });

  test('keyShare: while the queue is shared, a caller with items queued may hold only its share; others keep their room', async () => {
    const { batcher, observer, release } = heldBatcher({ queueBound: 8, keyShare: 0.5 });
    const blocker = batcher.submit(1000, { key: 'z' });
    await tick(); // z's item runs (held): the queue is empty
    // A caller with nothing queued is admitted within the global bound, even beyond its share.
    const big = batcher.submitMany([1, 2, 3, 4, 5], { key: 'a' });
    expect(batcher.holdsShare('a')).toBe(false); // alone in the queue: no share binds yet
    const first = batcher.submit(7, { key: 'b' });
    // What the admission interceptor reads before decoding a's next message.
    expect([batcher.holdsShare('a'), batcher.holdsShare('b'), batcher.holdsShare('c')]).toEqual([true, false, false]);
    // Now shared: a holds 5 > its share of 4, so it is refused; b is not.
    expect(() => batcher.submit(6, { key: 'a' })).toThrow(KeyShareExceededError);
    expect(() => batcher.submit(6, { key: 'a' })).toThrow(QueueFullError); // same gRPC status: RESOURCE_EXHAUSTED
    expect(() => batcher.submit(6, { key: 'a' })).toThrow(
      /share of the text queue is used up \(it holds 5 items queued \+ 1 requested > its share 4\)/,
    );
    expect(observer.rejected.filter((r) => r === 'key_share')).toHaveLength(3);
    const more = batcher.submitMany([8, 9], { key: 'b' });
    expect(() => batcher.submit(10, { key: 'c' })).toThrow(/text queue is full/);
    release();
    await Promise.all([blocker, ...big, first, ...more]);
    expect(batcher.holdsShare('a', 60_000)).toBe(false); // holds nothing any more
    // Once its items ran, the caller holds nothing and is admitted again.
    await expect(batcher.submit(6, { key: 'a' })).resolves.toBe(encode(6));
  });

  test('holdsShare: a caller at its share while another caller was queued within the window', async () => {
    const { batcher, release } = heldBatcher({ queueBound: 8, keyShare: 0.5 });
    const blocker = batcher.submit(1000, { key: 'z' });
    await tick(); // z's item runs (held): the queue is empty
    const other = new AbortController();
    const b = batcher.submit(7, { key: 'b', signal: other.signal });
    const a = batcher.submitMany([1, 2, 3, 4], { key: 'a' });
    expect(batcher.holdsShare('a')).toBe(true);
    other.abort(); // b's item leaves the queue: a is alone in it now
    await expect(b).rejects.toThrow(CancelledError);
    expect(batcher.holdsShare('a')).toBe(false);
    expect(batcher.holdsShare('a', 60_000)).toBe(true);
    release();
    await Promise.all([blocker, ...a]);
  });

  test('keyShare: a lone caller may use the whole queue', async () => {
    const { batcher, observer, release } = heldBatcher({ queueBound: 8, keyShare: 0.5 });
    const blocker = batcher.submit(1000, { key: 'z' });
    await tick();
    const items = [
      ...batcher.submitMany([1, 2, 3, 4, 5], { key: 'a' }),
      ...batcher.submitMany([6, 7, 8], { key: 'a' }),
    ];
    expect(() => batcher.submit(9, { key: 'a' })).toThrow(/text queue is full/);
    expect(observer.rejected).toEqual(['overload']);
    release();
    await expect(Promise.all(items)).resolves.toEqual([1, 2, 3, 4, 5, 6, 7, 8].map(encode));
    await blocker;
  });

  test("keyShare also bounds a caller's cost, released as its items are prepared", async () => {
    const gates: (() => void)[] = [];
    const { batcher, release } = heldBatcher({
      keyShare: 0.5,
      costOf: (chars) => chars,
      costBound: 200,
      costUnit: 'characters queued for tokenizing',
      prepare: (v) => new Promise((resolve) => gates.push(() => resolve(v))),
    });
    const first = batcher.submitMany([40], { key: 'a' });
    const other = batcher.submitMany([45], { key: 'b' });
    expect(() => batcher.submitMany([70], { key: 'a' })).toThrow(
      /it holds 40 characters queued for tokenizing \+ 70 requested > its share 100/,
    );
    await tick();
    gates.splice(0).forEach((g) => g());
    await tick();
    // a's text is tokenized: its cost is released although it still waits for the encoder.
    const second = batcher.submitMany([70], { key: 'a' });
    await tick();
    gates.splice(0).forEach((g) => g());
    release();
    await expect(Promise.all([...first, ...other, ...second])).resolves.toEqual([40, 45, 70].map(encode));
  });

  test('rejects a keyShare outside (0, 1]', () => {
    expect(() => makeBatcher({ keyShare: 0 })).toThrow(RangeError);
    expect(() => makeBatcher({ keyShare: 1.5 })).toThrow(RangeError);
  });
});
