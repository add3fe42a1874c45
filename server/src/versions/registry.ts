/**
 * The model versions a data directory knows: the configured base model(s) and every fine-tuned
 * version, with their bundle directories (fine-tuned bundles live in `<data dir>/models/<version>`),
 * lineage and metrics, plus which version is active (persisted, so a restart serves it again).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelVersionRecord, Store } from '../store/store';
import { echo } from '../util/echo';

export const ACTIVE_VERSION_KEY = 'active_model_version';

export class ModelNotFoundError extends Error {
  constructor(
    readonly version: string,
    hint?: string,
  ) {
    super(`no model version ${JSON.stringify(echo(version))}${hint ? `: ${hint}` : ''}`);
    this.name = 'ModelNotFoundError';
  }
}

/** Version strings become directory names: keep them to a safe alphabet. */
const SAFE_VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class ModelRegistry {
  readonly modelsDir: string;

  constructor(
    private readonly store: Store,
    dataDir: string,
  ) {
    this.modelsDir = path.join(dataDir, 'models');
    fs.mkdirSync(this.modelsDir, { recursive: true });
  }

  /** Records a model the server was configured with (idempotent; follows a moved bundle). */
  async registerBase(version: string, name: string, bundleDir: string): Promise<void> {
    const known = await this.store.getModelVersion(version);
    await this.store.upsertModelVersion({
      version,
      name,
      bundleDir: path.resolve(bundleDir),
      parentVersion: known?.parentVersion ?? '',
      jobId: known?.jobId ?? '',
      createdAt: known?.createdAt ?? Math.floor(Date.now() / 1000),
      metrics: known?.metrics ?? {},
    });
  }

  /**
   * Moves a job's output bundle into the registry's directory (same filesystem: one rename) and
   * records it. The move happens before the record, so a crash in between leaves an orphan
   * directory, never a record without its bundle.
   */
  async registerFineTuned(o: {
    version: string;
    name: string;
    bundleDir: string;
    parentVersion: string;
    jobId: string;
    metrics: Record<string, number>;
  }): Promise<ModelVersionRecord> {
    if (!SAFE_VERSION.test(o.version)) throw new Error(`model version ${JSON.stringify(o.version)} is not a safe name`);
    const existing = await this.store.getModelVersion(o.version);
    if (existing && existing.jobId !== o.jobId)
      throw new Error(
        `model version ${o.version} already exists (${existing.jobId ? `from job ${existing.jobId}` : 'a base model'}); a job's output never replaces another version`,
      );
    const dest = path.join(this.modelsDir, o.version);
    if (path.resolve(o.bundleDir) !== dest) {
      fs.rmSync(dest, { recursive: true, force: true }); // left over from an interrupted registration of this same job
      fs.renameSync(o.bundleDir, dest);
    }
    const record: ModelVersionRecord = {
      version: o.version,
      name: o.name,
      bundleDir: dest,
      parentVersion: o.parentVersion,
      jobId: o.jobId,
      createdAt: Math.floor(Date.now() / 1000),
      metrics: o.metrics,
    };
    await this.store.upsertModelVersion(record);
    return record;
  }

  async get(version: string): Promise<ModelVersionRecord> {
    const r = await this.store.getModelVersion(version);
    if (!r) throw new ModelNotFoundError(version);
    return r;
  }

  async has(version: string): Promise<boolean> {
    return (await this.store.getModelVersion(version)) !== undefined;
  }

  list(): Promise<ModelVersionRecord[]> {
    return this.store.listModelVersions();
  }

  /** The version last activated through ActivateModel, if any. */
  persistedActive(): Promise<string | undefined> {
    return this.store.getSetting(ACTIVE_VERSION_KEY);
  }

  setActive(version: string): Promise<void> {
    return this.store.setSetting(ACTIVE_VERSION_KEY, version);
  }
}
