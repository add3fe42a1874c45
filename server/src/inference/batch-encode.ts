/**
 * Offline encoding of a list in batches (eval, fine-tune features, `clipserve embed`, the bench): per batch,
 * the items' images are preprocessed (at most `imagesInFlight` at once, which bounds memory) and
 * their captions tokenized off the event loop, then both encoders run; features land in two flat
 * n × embedDim arrays. Serving does not use it: live calls go through the dynamic batchers
 * (inference/embedder.ts).
 */
import type { TokenizedText } from './model-port';

/** What batch encoding needs of a loaded model (runtime/model.ts LoadedModel satisfies it). */
export interface OfflineEncoder {
  readonly info: { embedDim: number; contextLength: number; imageSize: number };
  tokenizeText(text: string, contextLength?: number, signal?: AbortSignal): Promise<TokenizedText>;
  encodeText(ids: Int32Array, n: number): Promise<Float32Array>;
  encodeImage(pixels: Float32Array, n: number): Promise<Float32Array>;
}

export interface BatchEncodeOptions<T> {
  batchSize: number;
  /** The item's preprocessed CHW pixels; omitted: no image features (`image` comes back empty). */
  image?: (item: T, index: number) => Promise<Float32Array>;
  /** The item's text; omitted: no text features (`text` comes back empty). */
  text?: (item: T) => string;
  /** Images preprocessed at once within a batch (default: the whole batch). */
  imagesInFlight?: number;
  /** Cancels tokenization in the pool; checked before each batch through `beforeBatch`. */
  signal?: AbortSignal;
  /** Runs before each batch (a cancellation check may throw here). */
  beforeBatch?: () => void;
  /** After each batch: items encoded so far, and the total. */
  onProgress?: (done: number, total: number) => void;
}

export async function encodeInBatches<T>(
  model: OfflineEncoder,
  items: readonly T[],
  o: BatchEncodeOptions<T>,
): Promise<{ image: Float32Array; text: Float32Array }> {
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1)
    throw new RangeError(`batch size must be a positive integer, got ${o.batchSize}`);
  const { embedDim: d, contextLength: ctxLen, imageSize: S } = model.info;
  const per = 3 * S * S;
  const image = new Float32Array(o.image ? items.length * d : 0);
  const text = new Float32Array(o.text ? items.length * d : 0);
  for (let start = 0; start < items.length; start += o.batchSize) {
    o.beforeBatch?.();
    const batch = items.slice(start, start + o.batchSize);
    const n = batch.length;
    const imageFn = o.image;
    const imageP = imageFn
      ? (async () => {
          const pixels = new Float32Array(n * per);
          await forEachLimited(batch, o.imagesInFlight ?? n, async (item, i) =>
            pixels.set(await imageFn(item, start + i), i * per),
          );
          return model.encodeImage(pixels, n);
        })()
      : undefined;
    const textFn = o.text;
    const textP = textFn
      ? (async () => {
          const ids = new Int32Array(n * ctxLen);
          const rows = await Promise.all(batch.map((item) => model.tokenizeText(textFn(item), ctxLen, o.signal)));
          rows.forEach((t, i) => ids.set(t.ids, i * ctxLen));
          return model.encodeText(ids, n);
        })()
      : undefined;
    const [img, txt] = await Promise.all([imageP, textP]);
    if ((img && img.length !== n * d) || (txt && txt.length !== n * d))
      throw new Error('the model returned features of an unexpected size');
    if (img) image.set(img, start * d);
    if (txt) text.set(txt, start * d);
    o.onProgress?.(start + n, items.length);
  }
  return { image, text };
}

/** Runs fn over items with at most `limit` calls in flight; the first failure rejects. */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, lane));
}
