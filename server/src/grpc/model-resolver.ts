/**
 * How handlers reach a model version: `acquire` (server/src/inference/model-host.ts ModelHost.acquire, the
 * one resolver of a requested version for every transport) leases the version for the whole call,
 * so everything a call computes, and the version its answer names, come from one version.
 */
import type { ModelResolver, ModelVersionLease } from '../inference/model-port';

/** The port is declared by the inference core (inference/ModelHost implements it). */
export type { ModelResolver, ModelVersionLease };

/** Runs `fn` on the requested version, released however `fn` ends. */
export async function withModel<T>(
  models: ModelResolver,
  version: string,
  fn: (lease: ModelVersionLease) => Promise<T>,
): Promise<T> {
  const lease = await models.acquire(version);
  try {
    return await fn(lease);
  } finally {
    lease.release();
  }
}
