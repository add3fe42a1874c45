/**
 * Binds the generic dynamic batcher to the model: one batcher per modality. Items are admitted
 * first (counted against the queue bound; images also priced by the pixels their headers declare,
 * against the per-request decode budget and the queue's pixel bound), then prepared in the model's
 * worker pool — texts tokenized, images decoded and resized — so the event loop never does that
 * work and the next batch is prepared while the current one runs. The embedder returns raw
 * features; normalization is the caller's choice.
 */
import { DynamicBatcher } from '../batching';
import type { BatcherObserver, BatcherStats, RejectReason, SubmitOptions } from '../batching';
import { inspectImage } from '../preprocess/decode';
import { ImageError } from '../preprocess/errors';
import type { EmbedderPort, EmbeddingModel, TextEmbedding } from './model-port';

export interface EmbedderOptions {
  maxBatchSize: number;
  maxQueueDelayMs: number;
  queueBound: number;
  /** Most declared pixels one request may ask to decode (the per-request decode budget). */
  maxRequestPixels?: number;
  /** Most declared pixels admitted and not yet decoded, all callers together. */
  queuePixels?: number;
  /** Most text characters admitted and not yet tokenized, all callers together (tokenizing costs per character). */
  queueTextChars?: number;
  /** Fraction of each queue bound one caller (SubmitOptions.key) may hold while the queue is shared. */
  callerShare?: number;
  /** Most preprocessing workers one caller's items may occupy at once (default: all). */
  callerWorkers?: number;
  observer?: BatcherObserver;
}

/** An image as admitted: its bytes, its price, and a header error to report when its turn comes. */
interface AdmittedImage {
  bytes: Uint8Array;
  pixels: number;
  error?: unknown;
}

export type { TextEmbedding };

/** The observer's reason for an image that failed preprocessing. */
export function imageRejectReason(err: unknown): RejectReason {
  return err instanceof ImageError &&
    (err.code === 'TOO_LARGE' ||
      err.code === 'TOO_MANY_PIXELS' ||
      err.code === 'DECODE_TIMEOUT' ||
      err.code === 'OVER_BUDGET')
    ? 'too_large'
    : 'bad_image';
}

interface TokenizedItem {
  ids: Int32Array;
  truncated: boolean;
  tokens: number;
}

export class Embedder implements EmbedderPort {
  private readonly textBatcher: DynamicBatcher<string, TokenizedItem, TextEmbedding>;
  private readonly imageBatcher: DynamicBatcher<AdmittedImage, Float32Array, Float32Array>;
  private readonly dim: number;
  private readonly contextLength: number;

  constructor(
    private readonly model: EmbeddingModel,
    private readonly opts: EmbedderOptions,
  ) {
    this.dim = model.info.embedDim;
    this.contextLength = model.info.contextLength;
    const common = {
      maxBatchSize: opts.maxBatchSize,
      maxQueueDelayMs: opts.maxQueueDelayMs,
      queueBound: opts.queueBound,
      keyShare: opts.callerShare,
      observer: opts.observer,
    };
    this.textBatcher = new DynamicBatcher({
      ...common,
      modality: 'text',
      prepare: (text, signal, key) => this.tokenize(text, signal, key),
      // Every admitted text goes to the pool at once (a tokenized row is 77 ids): the pool then
      // serves requests in turn instead of in arrival order.
      prepareAhead: opts.queueBound,
      costOf: (text) => text.length,
      costBound: opts.queueTextChars,
      costUnit: 'characters queued for tokenizing',
      run: (items) => this.runText(items),
    });
    this.imageBatcher = new DynamicBatcher({
      ...common,
      modality: 'image',
      prepare: (image, signal, key) =>
        image.error !== undefined
          ? Promise.reject(image.error)
          : this.model.preprocessImage(image.bytes, { signal, owner: key }),
      costOf: (image) => image.pixels,
      costBound: opts.queuePixels,
      run: (pixels) => this.runImages(pixels),
      rejectReasonOf: imageRejectReason,
    });
  }

  /**
   * Queues texts, tokenized when their turn comes; one promise per text (see
   * DynamicBatcher.submitMany for the synchronous admission errors).
   */
  embedTexts(texts: readonly string[], options: SubmitOptions = {}): Promise<TextEmbedding>[] {
    return this.textBatcher.submitMany(texts, options);
  }

  /**
   * Queues encoded images; one promise per image, rejected with ImageError for a bad one. Their
   * headers are read here (microseconds, no decoding), against the limits the model was loaded
   * with, to price them: a request whose images
   * declare more pixels than the per-request budget is refused whole, at once.
   */
  embedImages(images: readonly Uint8Array[], options: SubmitOptions = {}): Promise<Float32Array>[] {
    const admitted = images.map((bytes): AdmittedImage => {
      try {
        return { bytes, pixels: inspectImage(bytes, this.model.imageLimits).pixels };
      } catch (error) {
        return { bytes, pixels: 0, error };
      }
    });
    const pixels = admitted.reduce((sum, a) => sum + a.pixels, 0);
    const budget = this.opts.maxRequestPixels;
    if (budget !== undefined && pixels > budget) {
      throw new ImageError(
        'OVER_BUDGET',
        `the request's images declare ${pixels} pixels, more than the per-request decode budget of ${budget}; send fewer or smaller images per request`,
      );
    }
    return this.imageBatcher.submitMany(admitted, options);
  }

  stats(): { text: BatcherStats; image: BatcherStats } {
    return { text: this.textBatcher.stats(), image: this.imageBatcher.stats() };
  }

  /** Resolves when both queues are empty and no run is in flight. */
  /** True when `key` already holds its share of the modality's queue while others wait (see DynamicBatcher.holdsShare). */
  holdsShare(key: string, modality: 'text' | 'image', sharedWithinMs = 0): boolean {
    return (modality === 'text' ? this.textBatcher : this.imageBatcher).holdsShare(key, sharedWithinMs);
  }

  async whenIdle(): Promise<void> {
    await Promise.all([this.textBatcher.whenIdle(), this.imageBatcher.whenIdle()]);
  }

  close(): void {
    this.textBatcher.close();
    this.imageBatcher.close();
  }

  private async tokenize(text: string, signal: AbortSignal, key: string): Promise<TokenizedItem> {
    const row = this.model.tokenizeText
      ? await this.model.tokenizeText(text, this.contextLength, signal, key)
      : this.model.tokenizer.tokenize(text, this.contextLength);
    if (row.ids.length !== this.contextLength)
      throw new Error(`tokenizer returned ${row.ids.length} ids, expected ${this.contextLength}`);
    return { ids: row.ids, truncated: row.truncated, tokens: row.eotIndex + 1 };
  }

  private async runText(items: TokenizedItem[]): Promise<TextEmbedding[]> {
    const ctx = this.contextLength;
    const ids = new Int32Array(items.length * ctx);
    items.forEach((item, i) => ids.set(item.ids, i * ctx));
    const features = await this.model.encodeText(ids, items.length);
    const vectors = this.rows(features, items.length);
    return items.map((item, i) => ({ vector: vectors[i], truncated: item.truncated, tokens: item.tokens }));
  }

  private async runImages(pixels: Float32Array[]): Promise<Float32Array[]> {
    const per = pixels[0].length;
    const batch = new Float32Array(pixels.length * per);
    pixels.forEach((p, i) => {
      if (p.length !== per) throw new Error(`preprocessed image ${i} has ${p.length} values, expected ${per}`);
      batch.set(p, i * per);
    });
    const features = await this.model.encodeImage(batch, pixels.length);
    return this.rows(features, pixels.length);
  }

  /** The n rows of an n × dim feature matrix, each a copy. */
  private rows(features: Float32Array, n: number): Float32Array[] {
    if (features.length !== n * this.dim)
      throw new Error(`encoder returned ${features.length} values for ${n} × ${this.dim}`);
    return Array.from({ length: n }, (_, i) => features.slice(i * this.dim, (i + 1) * this.dim));
  }
}
