/**
 * Binds the generic dynamic batcher to the model: one batcher per modality. Text is tokenized on
 * admission (cheap, synchronous: the truncation flag is known before queueing); images are decoded
 * and resized on admission in the model's worker pool, so the next batch is prepared while the
 * current one runs. The embedder returns raw features; normalization is the caller's choice.
 */
import { performance } from 'node:perf_hooks';
import { DynamicBatcher } from '../batching';
import type { BatcherObserver, BatcherStats, RejectReason, SubmitOptions } from '../batching';
import { ImageError } from '../preprocess/errors';
import type { ImageLimits } from '../preprocess/errors';
import type { EmbeddingModel } from './model-port';

export interface EmbedderOptions {
  maxBatchSize: number;
  maxQueueDelayMs: number;
  queueBound: number;
  imageLimits: ImageLimits;
  observer?: BatcherObserver;
}

export interface TextEmbedding {
  /** Raw features, embedDim long. */
  vector: Float32Array;
  truncated: boolean;
  /** Tokens the model read, SOT and EOT included (at most the context length): usage reports. */
  tokens: number;
}

/** The observer's reason for an image that failed preprocessing. */
export function imageRejectReason(err: unknown): RejectReason {
  return err instanceof ImageError && (err.code === 'TOO_LARGE' || err.code === 'TOO_MANY_PIXELS') ? 'too_large' : 'bad_image';
}

interface TokenizedItem {
  ids: Int32Array;
  truncated: boolean;
  tokens: number;
}

export class Embedder {
  private readonly textBatcher: DynamicBatcher<TokenizedItem, TokenizedItem, TextEmbedding>;
  private readonly imageBatcher: DynamicBatcher<Uint8Array, Float32Array, Float32Array>;
  private readonly dim: number;
  private readonly contextLength: number;

  constructor(
    private readonly model: EmbeddingModel,
    private readonly opts: EmbedderOptions,
  ) {
    this.dim = model.info.embedDim;
    this.contextLength = model.info.contextLength;
    const common = { maxBatchSize: opts.maxBatchSize, maxQueueDelayMs: opts.maxQueueDelayMs, queueBound: opts.queueBound, observer: opts.observer };
    // Text enters the batcher already tokenized, so it needs no prepare stage.
    this.textBatcher = new DynamicBatcher({
      ...common,
      modality: 'text',
      run: (items) => this.runText(items),
    });
    this.imageBatcher = new DynamicBatcher({
      ...common,
      modality: 'image',
      prepare: (bytes) => this.model.preprocessImage(bytes, this.opts.imageLimits),
      run: (pixels) => this.runImages(pixels),
      rejectReasonOf: imageRejectReason,
    });
  }

  /**
   * Tokenizes and queues texts; one promise per text (see DynamicBatcher.submitMany for the
   * synchronous admission errors).
   */
  embedTexts(texts: readonly string[], options: SubmitOptions = {}): Promise<TextEmbedding>[] {
    const items = texts.map((text) => {
      const t0 = performance.now();
      const { ids, truncated, eotIndex } = this.model.tokenizer.tokenize(text, this.contextLength);
      this.observe((o) => o.preprocessed('text', (performance.now() - t0) / 1000));
      if (ids.length !== this.contextLength) throw new Error(`tokenizer returned ${ids.length} ids, expected ${this.contextLength}`);
      return { ids, truncated, tokens: eotIndex + 1 };
    });
    return this.textBatcher.submitMany(items, options);
  }

  /** Queues encoded images; one promise per image, rejected with ImageError for a bad one. */
  embedImages(images: readonly Uint8Array[], options: SubmitOptions = {}): Promise<Float32Array>[] {
    return this.imageBatcher.submitMany(images, options);
  }

  stats(): { text: BatcherStats; image: BatcherStats } {
    return { text: this.textBatcher.stats(), image: this.imageBatcher.stats() };
  }

  /** Resolves when both queues are empty and no run is in flight. */
  async whenIdle(): Promise<void> {
    await Promise.all([this.textBatcher.whenIdle(), this.imageBatcher.whenIdle()]);
  }

  close(): void {
    this.textBatcher.close();
    this.imageBatcher.close();
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
    if (features.length !== n * this.dim) throw new Error(`encoder returned ${features.length} values for ${n} × ${this.dim}`);
    return Array.from({ length: n }, (_, i) => features.slice(i * this.dim, (i + 1) * this.dim));
  }

  private observe(fn: (o: BatcherObserver) => void): void {
    if (!this.opts.observer) return;
    try {
      fn(this.opts.observer);
    } catch {
      /* an observer bug must not fail embedding */
    }
  }
}
