/**
 * The served model versions. One version is active (what unpinned calls get); any other known
 * version is loaded on demand when a call pins it, within a budget (most versions loaded, most
 * bytes of weights), least recently used first out. The active version is never unloaded.
 *
 * `acquire(version)` is the single place where a requested version becomes a model: every
 * transport (gRPC, HTTP) calls it, holds the lease for the whole call, so a call runs entirely on
 * one version and its answer names that version, and a version being unloaded finishes its leased
 * calls before it closes. Loads of one version are coalesced; a failed load is remembered for a
 * while, so a caller pinning a broken version cannot make the server reload it on every call.
 *
 * `activate(version)` loads and warms the version first (the old one keeps serving meanwhile, and
 * keeps serving if loading fails), then switches with one assignment. The previous version stays
 * loaded (pinned callers and an index built with it keep working) until the budget needs its room.
 */
import type { Logger } from 'pino';
import type { Embedder } from './embedder';
import type { EmbeddingModel, ModelResolver, ServedModelInfo } from './model-port';

export interface HostedModel<M extends EmbeddingModel = EmbeddingModel> {
  model: M;
  embedder: Embedder;
}

/** A version in use by one call: release it when the call is done (idempotent). */
export interface ModelLease<M extends EmbeddingModel = EmbeddingModel> extends HostedModel<M> {
  readonly info: ServedModelInfo;
  release(): void;
}

/** A version could not be loaded or activated (the active version keeps serving). */
export class ModelActivationError extends Error {
  constructor(
    message: string,
    readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'ModelActivationError';
  }
}

/** Loading a version would exceed the budget and nothing can be unloaded to make room. */
export class ModelBudgetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelBudgetError';
  }
}

export interface ModelBudget {
  /** Most versions loaded at once, the active one included (>= 1). */
  maxVersions: number;
  /** Most bytes of weights loaded at once (0: no limit). */
  maxBytes: number;
}

/** What ListModels / GetModelInfo report about a loaded version. */
export interface LoadedVersion {
  version: string;
  info: ServedModelInfo;
  active: boolean;
  /** Calls running on it now. */
  inFlight: number;
  bytes: number;
  lastUsedMs: number;
}

export interface ModelHostOptions<M extends EmbeddingModel> {
  /** Loads and warms a model (the server's loader). */
  load: (bundleDir: string) => Promise<M>;
  createEmbedder: (model: M, version: string) => Embedder;
  /** The bundle directory of a known version (the registry reads the store); rejects (ModelNotFoundError) for an unknown one. */
  locate: (version: string) => string | Promise<string>;
  /** Bytes a version's weights take (the budget's unit). */
  sizeOf: (bundleDir: string) => number;
  budget?: ModelBudget;
  /** How long a failed load is answered from memory instead of retried (default 30 s). */
  failedLoadRetryMs?: number;
  /** Called after each switch (metrics, logs). */
  onActivated?: (info: ServedModelInfo, previous: ServedModelInfo | undefined) => void;
  /** Called whenever the set of loaded versions changes (metrics). */
  onLoadedChanged?: (loaded: LoadedVersion[]) => void;
  logger: Logger;
}

interface Entry<M extends EmbeddingModel> extends HostedModel<M> {
  version: string;
  bytes: number;
  leases: number;
  lastUsedMs: number;
  /** Set once the entry left `loaded`: resolves the drain when the last lease ends. */
  onIdle?: () => void;
}

interface Loading<M extends EmbeddingModel> {
  promise: Promise<Entry<M>>;
  bytes: number;
}

const DEFAULT_BUDGET: ModelBudget = { maxVersions: 2, maxBytes: 0 };

export class ModelHost<M extends EmbeddingModel = EmbeddingModel> implements ModelResolver {
  private readonly loaded = new Map<string, Entry<M>>();
  private readonly loading = new Map<string, Loading<M>>();
  /** Versions whose bundle directory is being looked up, before their load starts. */
  private readonly locating = new Map<string, Promise<Entry<M>>>();
  private readonly failed = new Map<string, { at: number; error: Error }>();
  private activeVersion: string | undefined;
  /** Activations run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly retiring = new Set<Promise<void>>();
  private readonly draining = new Set<Entry<M>>();
  private closed = false;
  private readonly budget: ModelBudget;

  constructor(private readonly opts: ModelHostOptions<M>) {
    this.budget = opts.budget ?? DEFAULT_BUDGET;
    if (!Number.isInteger(this.budget.maxVersions) || this.budget.maxVersions < 1)
      throw new RangeError(`maxVersions must be an integer >= 1, got ${this.budget.maxVersions}`);
    if (!Number.isFinite(this.budget.maxBytes) || this.budget.maxBytes < 0)
      throw new RangeError(`maxBytes must be >= 0, got ${this.budget.maxBytes}`);
  }

  /** Installs the first model (no previous one to drain); it is active and never unloaded. */
  install(model: M, bundleDir?: string): void {
    if (this.activeVersion !== undefined) throw new Error('the host already serves a model');
    const version = model.info.version;
    this.loaded.set(version, this.entry(version, model, bundleDir === undefined ? 0 : this.opts.sizeOf(bundleDir)));
    this.activeVersion = version;
    this.opts.onActivated?.(model.info, undefined);
    this.changed();
  }

  get ready(): boolean {
    return this.activeVersion !== undefined;
  }

  /** The active version. */
  current(): HostedModel<M> {
    if (this.activeVersion === undefined) throw new Error('no model is being served yet');
    return this.loaded.get(this.activeVersion)!;
  }

  embedder(): Embedder {
    return this.current().embedder;
  }

  info(): ServedModelInfo {
    return this.current().model.info;
  }

  isLoaded(version: string): boolean {
    return this.loaded.has(version);
  }

  /** The loaded versions, the active one first, then most recently used first. */
  loadedVersions(): LoadedVersion[] {
    return [...this.loaded.values()]
      .map((e) => ({
        version: e.version,
        info: e.model.info,
        active: e.version === this.activeVersion,
        inFlight: e.leases,
        bytes: e.bytes,
        lastUsedMs: e.lastUsedMs,
      }))
      .sort((a, b) => Number(b.active) - Number(a.active) || b.lastUsedMs - a.lastUsedMs);
  }

  /**
   * The model for `version` ("" = the active one), loaded if needed, leased until `release()`.
   * Rejects with ModelNotFoundError (unknown version), ModelActivationError (it does not load) or
   * ModelBudgetError (no room). The one resolver of a requested version for every transport.
   */
  async acquire(version: string): Promise<ModelLease<M>> {
    const wanted = version === '' ? this.activeVersion : version;
    if (wanted === undefined) throw new Error('no model is being served yet');
    const ready = this.loaded.get(wanted);
    const entry = ready ?? (await this.ensureLoaded(wanted, false));
    return this.lease(entry);
  }

  /**
   * Makes `version` active, loading and warming it first when needed. Rejects with
   * ModelActivationError (the old version still serving) when that fails.
   */
  activate(version: string): Promise<{ info: ServedModelInfo; previous: ServedModelInfo }> {
    const run = async () => {
      if (this.closed) throw new ModelActivationError('the server is shutting down');
      const previous = this.info();
      if (version === previous.version) return { info: previous, previous };
      const lease = await this.acquireForActivation(version);
      try {
        if (this.closed) throw new ModelActivationError('the server is shutting down');
        this.activeVersion = version;
        // The previous version becomes the most recently used inactive one: last out.
        const old = this.loaded.get(previous.version);
        if (old) old.lastUsedMs = Date.now();
        this.opts.onActivated?.(lease.info, previous);
        this.enforceBudget();
        this.changed();
        return { info: lease.info, previous };
      } finally {
        lease.release();
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Waits for activations, loads and unloads in progress, then closes every loaded version. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    await Promise.all([...this.loading.values()].map((l) => l.promise.catch(() => undefined)));
    const entries = [...this.loaded.values()];
    this.loaded.clear();
    for (const e of entries) this.retire(e);
    // The server has drained its calls by now: a lease still held belongs to a call that was cut,
    // whose queued work closing the embedder rejects.
    for (const e of this.draining) e.onIdle?.();
    await Promise.all([...this.retiring]);
  }

  // ---------------------------------------------------------------- internals

  private entry(version: string, model: M, bytes: number): Entry<M> {
    return {
      version,
      model,
      embedder: this.opts.createEmbedder(model, version),
      bytes,
      leases: 0,
      lastUsedMs: Date.now(),
    };
  }

  private lease(e: Entry<M>): ModelLease<M> {
    e.leases++;
    e.lastUsedMs = Date.now();
    let released = false;
    return {
      model: e.model,
      embedder: e.embedder,
      info: e.model.info,
      release: () => {
        if (released) return;
        released = true;
        e.leases--;
        if (e.leases === 0) e.onIdle?.();
      },
    };
  }

  /** For activation: the entry may be unloaded between its load and the lease; then load again. */
  private async acquireForActivation(version: string): Promise<ModelLease<M>> {
    for (let attempt = 0; ; attempt++) {
      const entry = this.loaded.get(version) ?? (await this.ensureLoaded(version, true));
      if (this.loaded.get(version) === entry) return this.lease(entry);
      if (attempt >= 2)
        throw new ModelActivationError(
          `version ${version} keeps being unloaded while it is activated: raise --max-loaded-versions`,
        );
    }
  }

  /** Loads `version` once however many callers ask (coalesced, from the registry lookup on), making room first. */
  private ensureLoaded(version: string, forActivation: boolean): Promise<Entry<M>> {
    const pending = this.loading.get(version);
    if (pending) return pending.promise;
    const locating = this.locating.get(version);
    if (locating) return locating;
    if (this.closed) return Promise.reject(new ModelActivationError('the server is shutting down'));
    const failure = this.failed.get(version);
    // An operator's activation always retries; a caller's pin is answered from memory for a while.
    if (failure && !forActivation && Date.now() - failure.at < (this.opts.failedLoadRetryMs ?? 30_000))
      return Promise.reject(failure.error);
    const located = (async () => {
      const bundleDir = await this.opts.locate(version);
      return this.loaded.get(version) ?? this.load(version, bundleDir, forActivation);
    })();
    this.locating.set(version, located);
    const forget = () => this.locating.delete(version);
    located.then(forget, forget);
    return located;
  }

  /** The load itself, once the bundle directory is known (ensureLoaded coalesces callers). */
  private load(version: string, bundleDir: string, forActivation: boolean): Promise<Entry<M>> {
    const pending = this.loading.get(version);
    if (pending) return pending.promise;
    if (this.closed) return Promise.reject(new ModelActivationError('the server is shutting down'));
    let bytes: number;
    try {
      bytes = this.opts.sizeOf(bundleDir);
      this.makeRoom(version, bytes, forActivation);
    } catch (err) {
      return Promise.reject(err);
    }
    const promise = (async () => {
      let model: M;
      try {
        model = await this.opts.load(bundleDir);
      } catch (err) {
        throw new ModelActivationError(
          `cannot load ${bundleDir}: ${err instanceof Error ? err.message : String(err)}`,
          err,
        );
      }
      if (model.info.version !== version) {
        await model.close().catch(() => undefined);
        throw new ModelActivationError(`${bundleDir} holds version ${model.info.version}, expected ${version}`);
      }
      if (this.closed) {
        await model.close().catch(() => undefined);
        throw new ModelActivationError('the server is shutting down');
      }
      const e = this.entry(version, model, bytes);
      this.loaded.set(version, e);
      this.opts.logger.info({ version, bytes, loaded: this.loaded.size }, 'model version loaded');
      return e;
    })();
    this.loading.set(version, { promise, bytes });
    promise.then(
      () => {
        this.loading.delete(version);
        this.failed.delete(version);
        this.changed();
      },
      (err: Error) => {
        this.loading.delete(version);
        if (err instanceof ModelActivationError && !this.closed)
          this.failed.set(version, { at: Date.now(), error: err });
      },
    );
    return promise;
  }

  /**
   * Unloads least recently used inactive versions until `bytes` more fit the budget (loads in
   * progress count as loaded). For an activation, the active version's room counts as free: it
   * becomes inactive right after, and enforceBudget() then unloads it if needed.
   */
  private makeRoom(version: string, bytes: number, forActivation: boolean): void {
    const { maxVersions, maxBytes } = this.budget;
    const activeBytes = this.loaded.get(this.activeVersion ?? '')?.bytes ?? 0;
    const exempt = forActivation ? { count: 1, bytes: activeBytes } : { count: 0, bytes: 0 };
    if (maxBytes > 0 && bytes + activeBytes - exempt.bytes > maxBytes) {
      throw new ModelBudgetError(
        `model version ${version} needs ${bytes} bytes; with the active version that exceeds the budget of ${maxBytes} bytes (--max-loaded-bytes)`,
      );
    }
    const used = () => {
      const count = this.loaded.size + this.loading.size;
      let total = 0;
      for (const e of this.loaded.values()) total += e.bytes;
      for (const l of this.loading.values()) total += l.bytes;
      return { count: count - exempt.count, bytes: total - exempt.bytes };
    };
    for (;;) {
      const u = used();
      if (u.count + 1 <= maxVersions && (maxBytes === 0 || u.bytes + bytes <= maxBytes)) return;
      const victim = this.leastRecentlyUsedInactive();
      if (!victim) {
        throw new ModelBudgetError(
          `cannot load model version ${version}: ${this.loaded.size} loaded and ${this.loading.size} loading fill the budget (--max-loaded-versions ${maxVersions}${maxBytes ? `, --max-loaded-bytes ${maxBytes}` : ''}); retry later`,
        );
      }
      this.unload(victim);
    }
  }

  /** After a switch: unloads inactive versions beyond the budget, least recently used first. */
  private enforceBudget(): void {
    const { maxVersions, maxBytes } = this.budget;
    const total = () => [...this.loaded.values()].reduce((s, e) => s + e.bytes, 0);
    while (this.loaded.size > maxVersions || (maxBytes > 0 && total() > maxBytes)) {
      const victim = this.leastRecentlyUsedInactive();
      if (!victim) return;
      this.unload(victim);
    }
  }

  private leastRecentlyUsedInactive(): Entry<M> | undefined {
    let victim: Entry<M> | undefined;
    for (const e of this.loaded.values())
      if (e.version !== this.activeVersion && (!victim || e.lastUsedMs < victim.lastUsedMs)) victim = e;
    return victim;
  }

  private unload(e: Entry<M>): void {
    this.loaded.delete(e.version);
    this.opts.logger.info({ version: e.version, inFlight: e.leases }, 'unloading model version (least recently used)');
    this.retire(e);
    this.changed();
  }

  /** Lets the leased calls and queued work of an entry finish, then closes it. */
  private retire(e: Entry<M>): void {
    const done = (async () => {
      try {
        if (e.leases > 0 && !this.closed) {
          this.draining.add(e);
          await new Promise<void>((resolve) => (e.onIdle = resolve));
        }
        if (!this.closed) await e.embedder.whenIdle();
      } finally {
        this.draining.delete(e);
        e.embedder.close();
        await e.model
          .close()
          .catch((err: unknown) =>
            this.opts.logger.error({ err, version: e.version }, 'closing a model version failed'),
          );
      }
    })();
    this.retiring.add(done);
    void done.finally(() => this.retiring.delete(done));
  }

  private changed(): void {
    try {
      this.opts.onLoadedChanged?.(this.loadedVersions());
    } catch (err) {
      this.opts.logger.error({ err }, 'loaded-versions observer failed');
    }
  }
}
