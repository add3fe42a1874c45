/**
 * Hot swap of the served model. The host holds the active model with its embedder (batchers);
 * handlers reach them through `embedder()` / `info()` at admission, which is synchronous, so every
 * call runs entirely on the model that was active when it arrived. `activate` loads and warms the
 * new model first (the old one keeps serving meanwhile, and keeps serving if loading fails), then
 * switches with one assignment, then lets the old embedder finish what was queued on it before
 * closing it and its model.
 */
import type { Logger } from 'pino';
import type { Embedder } from '../serve/embedder';
import type { EmbeddingModel, ServedModelInfo } from '../serve/model-port';

export interface HostedModel<M extends EmbeddingModel = EmbeddingModel> {
  model: M;
  embedder: Embedder;
}

export class ModelActivationError extends Error {
  constructor(message: string, readonly cause?: unknown) {
    super(message);
    this.name = 'ModelActivationError';
  }
}

export interface ModelHostOptions<M extends EmbeddingModel> {
  /** Loads and warms a model (the server's loader). */
  load: (bundleDir: string) => Promise<M>;
  createEmbedder: (model: M) => Embedder;
  /** Called after each switch (metrics, logs). */
  onActivated?: (info: ServedModelInfo, previous: ServedModelInfo | undefined) => void;
  logger: Logger;
}

export class ModelHost<M extends EmbeddingModel = EmbeddingModel> {
  private active: HostedModel<M> | undefined;
  /** Activations run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly retiring = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly opts: ModelHostOptions<M>) {}

  /** Installs the first model (no previous one to drain). */
  install(model: M): void {
    if (this.active) throw new Error('the host already serves a model');
    this.active = { model, embedder: this.opts.createEmbedder(model) };
    this.opts.onActivated?.(model.info, undefined);
  }

  get ready(): boolean {
    return this.active !== undefined;
  }

  current(): HostedModel<M> {
    if (!this.active) throw new Error('no model is being served yet');
    return this.active;
  }

  embedder(): Embedder {
    return this.current().embedder;
  }

  info(): ServedModelInfo {
    return this.current().model.info;
  }

  /**
   * Loads `bundleDir`, checks it is `expectedVersion` (when given), warms it and makes it active.
   * Rejects with ModelActivationError (the old model still serving) when any of that fails.
   */
  activate(bundleDir: string, expectedVersion?: string): Promise<{ info: ServedModelInfo; previous: ServedModelInfo }> {
    const run = async () => {
      if (this.closed) throw new ModelActivationError('the server is shutting down');
      const old = this.current();
      let model: M;
      try {
        model = await this.opts.load(bundleDir);
      } catch (err) {
        throw new ModelActivationError(`cannot load ${bundleDir}: ${err instanceof Error ? err.message : String(err)}`, err);
      }
      if (expectedVersion !== undefined && model.info.version !== expectedVersion) {
        await model.close().catch(() => undefined);
        throw new ModelActivationError(`${bundleDir} holds version ${model.info.version}, expected ${expectedVersion}`);
      }
      if (this.closed) {
        await model.close().catch(() => undefined);
        throw new ModelActivationError('the server is shutting down');
      }
      this.active = { model, embedder: this.opts.createEmbedder(model) };
      this.opts.onActivated?.(model.info, old.model.info);
      this.retire(old);
      return { info: model.info, previous: old.model.info };
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Finishes the old model's queued work in the background, then closes it. */
  private retire(old: HostedModel<M>): void {
    const done = (async () => {
      try {
        await old.embedder.whenIdle();
      } finally {
        old.embedder.close();
        await old.model.close().catch((err: unknown) => this.opts.logger.error({ err }, 'closing the previous model failed'));
      }
    })();
    this.retiring.add(done);
    void done.finally(() => this.retiring.delete(done));
  }

  /** Waits for activations and retirements in progress, then closes the active model. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    await Promise.all([...this.retiring]);
    const a = this.active;
    if (a) {
      a.embedder.close();
      await a.model.close();
    }
  }
}
