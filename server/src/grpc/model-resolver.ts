/**
 * How handlers reach a model version: `acquire` (server/src/models/host.ts ModelHost.acquire, the
 * one resolver of a requested version for every transport) leases the version for the whole call,
 * so everything a call computes, and the version its answer names, come from one version.
 */
import type { ServedModelInfo } from '../serve/model-port';
import type { EmbedderPort } from './request-work';

export interface ModelVersionLease {
  readonly info: ServedModelInfo;
  readonly embedder: EmbedderPort;
  release(): void;
}

export interface ModelResolver {
  /** "" = the active version. Rejects with ModelNotFoundError / ModelActivationError / ModelBudgetError. */
  acquire(version: string): Promise<ModelVersionLease>;
  /** The active version first, then the other loaded ones, most recently used first. */
  loadedVersions(): { version: string; active: boolean }[];
}

/** Runs `fn` on the requested version, released however `fn` ends. */
export async function withModel<T>(models: ModelResolver, version: string, fn: (lease: ModelVersionLease) => Promise<T>): Promise<T> {
  const lease = await models.acquire(version);
  try {
    return await fn(lease);
  } finally {
    lease.release();
  }
}
