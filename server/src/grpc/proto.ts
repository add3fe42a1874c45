/**
 * Loads the public API (proto/clipserve/v1) and the health service's proto with @grpc/proto-loader.
 * The same package definition feeds the handlers and server reflection, so what reflection
 * describes is exactly what is served.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO_PATH } from 'grpc-health-check';
import { PROTO_DIR } from '../util/paths';
import { repairMapEntries } from './reflection-descriptors';

export const EMBEDDING_SERVICE_NAME = 'clipserve.v1.EmbeddingService';
export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';
export const FINETUNE_SERVICE_NAME = 'clipserve.v1.FineTuneService';
export const MODEL_SERVICE_NAME = 'clipserve.v1.ModelService';

/** The files of package clipserve.v1, relative to PROTO_DIR. */
const API_FILES = [
  'clipserve/v1/common.proto',
  'clipserve/v1/embedding.proto',
  'clipserve/v1/finetune.proto',
  'clipserve/v1/models.proto',
];

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export interface LoadedProtos {
  /** Everything served, for reflection (descriptors repaired for strict clients). */
  packageDefinition: protoLoader.PackageDefinition;
  embeddingService: grpc.ServiceDefinition;
  fineTuneService: grpc.ServiceDefinition;
  modelService: grpc.ServiceDefinition;
}

let cached: LoadedProtos | undefined;

export function loadProtos(): LoadedProtos {
  if (cached) return cached;
  // grpc-health-check ships <root>/health/v1/health.proto; load it by its import name so the
  // descriptor reflection serves names the file as other tools expect.
  const healthRoot = path.resolve(HEALTH_PROTO_PATH, '..', '..', '..');
  const packageDefinition = protoLoader.loadSync([...API_FILES, path.relative(healthRoot, HEALTH_PROTO_PATH)], {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: [PROTO_DIR, healthRoot],
  });
  const embeddingService = packageDefinition[EMBEDDING_SERVICE_NAME] as grpc.ServiceDefinition | undefined;
  if (!embeddingService || !('EmbedText' in embeddingService))
    throw new Error(`${EMBEDDING_SERVICE_NAME} not found in ${PROTO_DIR}`);
  const service = (name: string, method: string): grpc.ServiceDefinition => {
    const def = packageDefinition[name] as grpc.ServiceDefinition | undefined;
    if (!def || !(method in def)) throw new Error(`${name} not found in ${PROTO_DIR}`);
    return def;
  };
  cached = {
    packageDefinition: repairMapEntries(packageDefinition),
    embeddingService,
    fineTuneService: service(FINETUNE_SERVICE_NAME, 'CreateFineTuneJob'),
    modelService: service(MODEL_SERVICE_NAME, 'ActivateModel'),
  };
  return cached;
}
