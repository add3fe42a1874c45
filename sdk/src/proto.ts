/**
 * The gRPC service constructors, built from the descriptor that scripts/build.mjs generates from
 * the shipped .proto files (see proto/ in the package).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DESCRIPTOR } from './generated/descriptor.js';

/** Fully qualified names, also used in the retry service config. */
export const EMBEDDING_SERVICE = 'clipserve.v1.EmbeddingService';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';
export const FINE_TUNE_SERVICE = 'clipserve.v1.FineTuneService';
export const MODEL_SERVICE = 'clipserve.v1.ModelService';

/** Conversion rules the types in ./wire.ts rely on. */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  oneofs: true,
};

export interface ServiceConstructors {
  embedding: grpc.ServiceClientConstructor;
  health: grpc.ServiceClientConstructor;
  fineTune: grpc.ServiceClientConstructor;
  model: grpc.ServiceClientConstructor;
}

let cached: ServiceConstructors | undefined;

function lookupService(root: grpc.GrpcObject, fullName: string): grpc.ServiceClientConstructor {
  let node: unknown = root;
  for (const part of fullName.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== 'function') throw new Error(`service ${fullName} is missing from the bundled proto descriptor`);
  return node as grpc.ServiceClientConstructor;
}

export function serviceConstructors(): ServiceConstructors {
  if (!cached) {
    // fromJSON's declared parameter type is protobuf.js's INamespace; the descriptor is its JSON form.
    const definition = protoLoader.fromJSON(DESCRIPTOR as Parameters<typeof protoLoader.fromJSON>[0], LOADER_OPTIONS);
    const root = grpc.loadPackageDefinition(definition);
    cached = {
      embedding: lookupService(root, EMBEDDING_SERVICE),
      health: lookupService(root, HEALTH_SERVICE),
      fineTune: lookupService(root, FINE_TUNE_SERVICE),
      model: lookupService(root, MODEL_SERVICE),
    };
  }
  return cached;
}
