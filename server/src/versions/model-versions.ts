/**
 * ModelVersions: the one owner of which version serves, over the registry (versions/registry.ts,
 * the model repository: what versions exist and which was activated last) and the host
 * (inference/model-host.ts, what is loaded). As in Triton, where the model repository says what
 * exists and the lifecycle manager loads, unloads and switches, this class holds the policy:
 * - restore: at start, register the configured model and serve the version last activated;
 * - activate: ActivateModel switches the host, then persists the choice for restarts and replicas;
 * - follow: replicas sharing the store follow the version activated on any of them, at once when
 *   the store notifies the change (PostgreSQL), else (and as a safety net) every followIntervalMs.
 */
import type { Logger } from 'pino';
import type { ServedModelInfo } from '../inference/model-port';
import type { ModelVersionRecord, StoreNotification } from '../store/store';
import { ACTIVE_VERSION_KEY, type ModelRegistry } from './registry';

/** What ModelVersions needs of the host (inference/ModelHost). */
export interface VersionHost {
  readonly ready: boolean;
  info(): ServedModelInfo;
  activate(version: string): Promise<unknown>;
  loadedVersions(): { version: string }[];
}

export interface ModelVersionsOptions {
  registry: ModelRegistry;
  host: VersionHost;
  /** The store's change feed (Store.onNotification); returns the unsubscribe function. */
  onNotification: (listener: (n: StoreNotification) => void) => () => void;
  logger: Logger;
  followIntervalMs?: number;
  /** How long a version that failed to load is not retried by the follower. */
  followRetryMs?: number;
}

export interface VersionListing {
  models: ModelVersionRecord[];
  activeVersion: string;
  loadedVersions: string[];
}

export class ModelVersions {
  readonly registry: ModelRegistry;
  private readonly host: VersionHost;
  private readonly logger: Logger;
  private readonly followIntervalMs: number;
  private readonly followRetryMs: number;
  private readonly failedAt = new Map<string, number>();
  private follower: NodeJS.Timeout | undefined;
  private unlisten = (): void => undefined;
  private following: Promise<void> | undefined;
  private followAgain = false;

  constructor(private readonly o: ModelVersionsOptions) {
    this.registry = o.registry;
    this.host = o.host;
    this.logger = o.logger;
    this.followIntervalMs = o.followIntervalMs ?? 10_000;
    this.followRetryMs = o.followRetryMs ?? 5 * 60_000;
  }

  /** After the first model is installed: registers it and restores the last activated version. */
  async restore(base: { version: string; name: string; bundleDir: string }): Promise<void> {
    await this.registry.registerBase(base.version, base.name, base.bundleDir);
    const wanted = await this.registry.persistedActive();
    if (wanted && wanted !== base.version && (await this.registry.has(wanted))) {
      try {
        await this.host.activate(wanted);
        this.logger.info({ version: wanted }, 'restored the last activated model version');
      } catch (err) {
        this.logger.error(
          { err, version: wanted },
          'cannot restore the last activated model version: serving the configured model',
        );
      }
    }
  }

  /** Every known version, the active one and the loaded ones (ListModels). */
  async list(): Promise<VersionListing> {
    const activeVersion = this.host.info().version;
    const loadedVersions = this.host.loadedVersions().map((v) => v.version);
    return { models: await this.registry.list(), activeVersion, loadedVersions };
  }

  /** Loads and switches to `version` (rejects, the active one serving on, when it cannot), then persists it. */
  async activate(
    version: string,
  ): Promise<{ record: ModelVersionRecord; previousVersion: string; loadedVersions: string[] }> {
    const record = await this.registry.get(version);
    const previousVersion = this.host.info().version;
    if (previousVersion !== version) {
      await this.host.activate(version);
      this.logger.info({ version, previous: previousVersion }, 'model activated');
    }
    await this.registry.setActive(version);
    return { record, previousVersion, loadedVersions: this.host.loadedVersions().map((v) => v.version) };
  }

  /** Starts following the version activated on other replicas. */
  startFollowing(): void {
    this.unlisten = this.o.onNotification((n) => {
      if ((n.kind === 'setting' && n.key === ACTIVE_VERSION_KEY) || n.kind === 'resync') this.follow();
    });
    this.follower = setInterval(() => this.follow(), this.followIntervalMs);
    this.follower.unref();
  }

  /** Stops following; resolves once a switch under way has finished. */
  async close(): Promise<void> {
    clearInterval(this.follower);
    this.unlisten();
    await this.following;
  }

  /** One activation at a time; a change announced during one is read after it. */
  private follow(): void {
    if (this.following) {
      this.followAgain = true;
      return;
    }
    this.following = (async () => {
      do {
        this.followAgain = false;
        await this.followOnce().catch((err: unknown) =>
          this.logger.error({ err }, 'cannot read the active model version'),
        );
      } while (this.followAgain);
    })().finally(() => (this.following = undefined));
  }

  private async followOnce(): Promise<void> {
    const wanted = await this.registry.persistedActive();
    if (!wanted || !this.host.ready || this.host.info().version === wanted || !(await this.registry.has(wanted)))
      return;
    if (Date.now() - (this.failedAt.get(wanted) ?? 0) < this.followRetryMs) return;
    try {
      await this.host.activate(wanted);
      this.logger.info({ version: wanted }, 'switched to the model version activated on another instance');
    } catch (err) {
      this.failedAt.set(wanted, Date.now());
      this.logger.error({ err, version: wanted }, 'cannot switch to the model version activated on another instance');
    }
  }
}
