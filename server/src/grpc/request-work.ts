/**
 * The items of one unary request in flight through the batchers. The first failing item fails the
 * request (its error names the item) and cancels the request's other items, so a bad image at
 * index 0 does not leave 255 good ones occupying the queue for nothing.
 */
import type { SubmitOptions } from '../batching';
import type { TextEmbedding } from '../inference/embedder';
import type { EmbedderPort } from '../inference/model-port';
import type { CallContext } from './call-context';
import { ItemFailure } from './status';

export type { EmbedderPort };

/** A list's name ("texts": its items are "texts[i]"), or the name of its i-th item. */
export type ItemNames = string | ((index: number) => string);

export class RequestWork {
  private readonly options: SubmitOptions;

  /** One request is one call: the call's signal cancels the request's items, and a failing item cancels the call. */
  constructor(
    private readonly embedder: EmbedderPort,
    private readonly ctx: CallContext,
  ) {
    this.options = { signal: ctx.signal, deadline: ctx.deadline, key: ctx.callerKey };
  }

  /**
   * Embeds texts; `field` names them in errors ("texts" → "texts[2]"), or is a function naming the
   * i-th one (an HTTP request that mixes texts and images names each by its place in `input`).
   */
  texts(texts: readonly string[], field: ItemNames): Promise<TextEmbedding[]> {
    return this.track(() => this.embedder.embedTexts(texts, this.options), field);
  }

  images(images: readonly Uint8Array[], field: ItemNames): Promise<Float32Array[]> {
    return this.track(() => this.embedder.embedImages(images, this.options), field);
  }

  /** Cancels whatever of this request is still queued. */
  cancel(): void {
    this.ctx.cancel();
  }

  private track<T>(submit: () => Promise<T>[], field: ItemNames): Promise<T[]> {
    const nameOf = typeof field === 'string' ? (i: number) => `${field}[${i}]` : field;
    let promises: Promise<T>[];
    try {
      promises = submit();
    } catch (err) {
      // Refused at admission (queue full, shutting down): drop what this request queued before.
      this.cancel();
      throw err;
    }
    const all = new Promise<T[]>((resolve, reject) => {
      const out: T[] = new Array(promises.length);
      let left = promises.length;
      let failed = false;
      if (left === 0) resolve(out);
      promises.forEach((p, i) => {
        p.then(
          (v) => {
            out[i] = v;
            if (--left === 0 && !failed) resolve(out);
          },
          (err: unknown) => {
            if (failed) return;
            failed = true;
            this.cancel();
            reject(new ItemFailure(nameOf(i), err));
          },
        );
      });
    });
    // The caller may never await this promise if a sibling submission throws first.
    all.catch(() => undefined);
    return all;
  }
}
