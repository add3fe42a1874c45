/**
 * Which scope each gRPC service needs. Unknown services need `admin`: a service added later is
 * closed until someone decides who may call it.
 */
import { EMBEDDING_SERVICE_NAME, FINETUNE_SERVICE_NAME, HEALTH_SERVICE_NAME, MODEL_SERVICE_NAME } from '../grpc/proto';
import type { Scope } from './scopes';

/** What a call must present: nothing, any valid key, or a key with a scope. */
export type Requirement = { kind: 'open' } | { kind: 'authenticated' } | { kind: 'scope'; scope: Scope };

export interface AuthPolicyOptions {
  /** grpc.health.v1.Health without a key (kubelet probes, load balancers). Default true. */
  openHealth?: boolean;
  /** Server reflection without a key (grpcurl, buf curl). Default true. */
  openReflection?: boolean;
}

export const SERVICE_SCOPES: Readonly<Record<string, Scope>> = {
  [EMBEDDING_SERVICE_NAME]: 'embed',
  [FINETUNE_SERVICE_NAME]: 'finetune',
  [MODEL_SERVICE_NAME]: 'admin',
};

const HEALTH_SERVICES = new Set([HEALTH_SERVICE_NAME]);
const REFLECTION_SERVICES = new Set([
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
]);

export class AuthPolicy {
  private readonly openHealth: boolean;
  private readonly openReflection: boolean;

  constructor(options: AuthPolicyOptions = {}) {
    this.openHealth = options.openHealth ?? true;
    this.openReflection = options.openReflection ?? true;
  }

  /** The requirement of a method path ("/clipserve.v1.EmbeddingService/EmbedText"). */
  requirement(methodPath: string): Requirement {
    const service = serviceOf(methodPath);
    if (HEALTH_SERVICES.has(service)) return this.openHealth ? { kind: 'open' } : { kind: 'authenticated' };
    if (REFLECTION_SERVICES.has(service)) return this.openReflection ? { kind: 'open' } : { kind: 'authenticated' };
    return { kind: 'scope', scope: SERVICE_SCOPES[service] ?? 'admin' };
  }
}

function serviceOf(methodPath: string): string {
  const trimmed = methodPath.startsWith('/') ? methodPath.slice(1) : methodPath;
  const slash = trimmed.lastIndexOf('/');
  return slash >= 0 ? trimmed.slice(0, slash) : trimmed;
}
