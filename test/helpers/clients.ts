/**
 * Typed gRPC clients for the tests, made from the wire types generated from proto/
 * (server/src/grpc/generated, `npm run gen:proto`): `await client.EmbedText({ texts: ['a'] })` takes an
 * EmbedTextRequest and resolves with an EmbedTextResponse__Output, so a test that sends a field the
 * proto does not have, or reads one the response does not carry, fails the type check. The protos are
 * loaded with the server's own loader options, which are the options the types were generated with.
 * Streaming methods and anything else grpc-js offers stay on `client.raw`.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType as EmbeddingProto } from '../../server/src/grpc/generated/embedding';
import type { ProtoGrpcType as FineTuneProto } from '../../server/src/grpc/generated/finetune';
import type { ProtoGrpcType as ModelsProto } from '../../server/src/grpc/generated/models';
import type { EmbeddingServiceClient } from '../../server/src/grpc/generated/clipserve/v1/EmbeddingService';
import type { FineTuneServiceClient } from '../../server/src/grpc/generated/clipserve/v1/FineTuneService';
import type { ModelServiceClient } from '../../server/src/grpc/generated/clipserve/v1/ModelService';
import { PROTO_LOADER_OPTIONS } from '../../server/src/grpc/proto';
import { PROTO_DIR } from '../../server/src/util/paths';

type Api = EmbeddingProto & FineTuneProto & ModelsProto;
const API_FILES = ['clipserve/v1/embedding.proto', 'clipserve/v1/finetune.proto', 'clipserve/v1/models.proto'];

let api: Api['clipserve']['v1'] | undefined;
/** The clipserve.v1 package, loaded once per test file. */
export function clipserveApi(): Api['clipserve']['v1'] {
  api ??= (
    grpc.loadPackageDefinition(
      protoLoader.loadSync(API_FILES, { ...PROTO_LOADER_OPTIONS, includeDirs: [PROTO_DIR] }),
    ) as unknown as Api
  ).clipserve.v1;
  return api;
}

/**
 * The unary methods of a generated client, promisified. The generated client declares each method
 * with four overloads; inference matches the last one, `(argument, callback)`, which carries both the
 * request and the response type. A streaming method's last overload is `(options?)`: it drops out.
 */
type Promised<F> = F extends (...args: infer A) => unknown
  ? A extends [infer Req, grpc.requestCallback<infer Res>]
    ? (request: Req, metadata?: grpc.Metadata, options?: grpc.CallOptions) => Promise<Res>
    : never
  : never;
/** The proto's own method names (EmbedText), not grpc-js's lower-case aliases (embedText). */
type ProtoName<K> = K extends string ? (K extends Uncapitalize<K> ? never : K) : never;
export type PromisedUnary<C> = {
  [K in keyof C as [Promised<C[K]>] extends [never] ? never : ProtoName<K>]: Promised<C[K]>;
};

export type TypedClient<C extends grpc.Client> = PromisedUnary<C> & {
  /** The generated grpc-js client itself: streams, channel state, waitForReady. */
  readonly raw: C;
  close(): void;
};

export interface ClientOptions {
  /** Default: insecure (the loopback servers of the tests). */
  credentials?: grpc.ChannelCredentials;
  /** grpc-js channel options, e.g. 'grpc.max_send_message_length'. */
  channel?: grpc.ChannelOptions;
  /** Default 127.0.0.1. */
  host?: string;
}

type Constructor<C> = (new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => C) & { service: grpc.ServiceDefinition };

function typedClient<C extends grpc.Client>(
  Ctor: Constructor<C>,
  port: number,
  options: ClientOptions,
): TypedClient<C> {
  const raw = new Ctor(
    `${options.host ?? '127.0.0.1'}:${port}`,
    options.credentials ?? grpc.credentials.createInsecure(),
    options.channel,
  );
  const client: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const [name, method] of Object.entries(Ctor.service)) {
    if (method.requestStream || method.responseStream) continue;
    const call = (raw as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>)[name].bind(raw);
    client[name] = (request: unknown, metadata = new grpc.Metadata(), callOptions: grpc.CallOptions = {}) =>
      new Promise((resolve, reject) =>
        call(request, metadata, callOptions, (err: grpc.ServiceError | null, res: unknown) =>
          err ? reject(err) : resolve(res),
        ),
      );
  }
  return client as TypedClient<C>;
}

export const embeddingClient = (port: number, options: ClientOptions = {}): TypedClient<EmbeddingServiceClient> =>
  typedClient(clipserveApi().EmbeddingService, port, options);
export const fineTuneClient = (port: number, options: ClientOptions = {}): TypedClient<FineTuneServiceClient> =>
  typedClient(clipserveApi().FineTuneService, port, options);
export const modelClient = (port: number, options: ClientOptions = {}): TypedClient<ModelServiceClient> =>
  typedClient(clipserveApi().ModelService, port, options);

/** Metadata carrying `authorization: Bearer <key>`. */
export function bearer(key: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

/** The error a call failed with; throws when it succeeded. */
export async function rejection(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** How a call ended, without throwing: its status code (and details), and the response when OK. */
export function outcome<T>(call: Promise<T>): Promise<{ code: grpc.status; details?: string; res?: T }> {
  return call.then(
    (res) => ({ code: grpc.status.OK, res }),
    (err: grpc.ServiceError) => ({ code: err.code, details: err.details }),
  );
}
