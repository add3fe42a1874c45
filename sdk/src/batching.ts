/**
 * Splitting large inputs into requests the server accepts, and running those requests with
 * bounded concurrency.
 */
import { abortedError } from './call.js';
import { toClipServeError } from './errors.js';

export interface Batch<T> {
  /** Index in the caller's list of the batch's first item. */
  offset: number;
  items: T[];
}

export interface BatchLimits {
  maxItems: number;
  /** Budget for the sum of item sizes in one request (payload bytes, framing excluded). */
  maxBytes: number;
}

/** Protobuf framing per repeated string/bytes item: tag + length varint. */
const PER_ITEM_OVERHEAD = 6;

/**
 * Cuts `count` items, produced in order by `load(i)`, into batches of at most `maxItems` items
 * whose sizes add up to at most `maxBytes`. An item larger than the budget travels alone (the
 * server then names it in its error). Items are loaded lazily, one batch ahead of the senders, so
 * a folder of images is never read into memory at once.
 */
export async function* batchesOf<T>(
  count: number,
  load: (index: number) => Promise<T> | T,
  sizeOf: (item: T) => number,
  limits: BatchLimits,
): AsyncGenerator<Batch<T>> {
  if (!(limits.maxItems >= 1)) throw new RangeError('maxItemsPerRequest must be >= 1');
  let items: T[] = [];
  let bytes = 0;
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const item = await load(i);
    const size = sizeOf(item) + PER_ITEM_OVERHEAD;
    if (items.length > 0 && (items.length >= limits.maxItems || bytes + size > limits.maxBytes)) {
      yield { offset, items };
      offset = i;
      items = [];
      bytes = 0;
    }
    items.push(item);
    bytes += size;
  }
  if (items.length > 0) yield { offset, items };
}

/**
 * Runs `work` over every batch with at most `concurrency` in flight. On the first failure the
 * remaining batches are not started, the ones in flight are cancelled through the signal passed to
 * `work`, and the first error is thrown once all have settled.
 */
export async function runBounded<B>(
  batches: AsyncIterator<B>,
  concurrency: number,
  signal: AbortSignal | undefined,
  work: (batch: B, signal: AbortSignal) => Promise<void>,
): Promise<void> {
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new RangeError('concurrency must be an integer >= 1');
  if (signal?.aborted) throw abortedError(signal);
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let firstError: unknown;
  const fail = (err: unknown): void => {
    if (firstError === undefined) firstError = err;
    if (!stop.signal.aborted) stop.abort(err);
  };
  const worker = async (): Promise<void> => {
    while (!stop.signal.aborted) {
      let next: IteratorResult<B>;
      try {
        // Async generators queue concurrent next() calls, so each batch goes to exactly one worker.
        next = await batches.next();
      } catch (err) {
        fail(err);
        return;
      }
      if (next.done || stop.signal.aborted) return;
      try {
        await work(next.value, stop.signal);
      } catch (err) {
        fail(err);
        return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await batches.return?.(undefined);
  }
  if (signal?.aborted) throw abortedError(signal);
  if (firstError !== undefined) throw toClipServeError(firstError);
}
