/**
 * clipserve.v1.EmbeddingService: its handlers, one small file per RPC or group (embed-handlers,
 * embed-stream, clip-task-handlers, model-info-handler), assembled over the shared dependencies.
 * Thin: validate, queue items through the embedder, and apply CLIP's heads (grpc/clip-tasks.ts
 * over inference/heads.ts, shared with the HTTP API) to the results. No model runtime here; the
 * served versions come in as a dependency.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CallContext, CallGate, unaryHandler } from './call-context';
import { classifyHandler, rankHandler, similarityHandler } from './clip-task-handlers';
import { embedImageHandler, embedTextHandler } from './embed-handlers';
import { embedStreamHandler, StreamStats } from './embed-stream';
import type { EmbeddingHandlerDeps } from './embedding-handler-deps';
import { getModelInfoHandler } from './model-info-handler';
import type { ModelResolver } from './model-resolver';
import type { RequestLimits } from './validate';

export interface EmbeddingServiceDeps {
  /** The served versions (server/src/inference/model-host.ts ModelHost). */
  models: ModelResolver;
  limits: RequestLimits;
  gate: CallGate;
  logger: Logger;
  /** EmbedStream: most items per stream read but not yet sent before reading pauses. */
  streamWindow: number;
  streamStats?: StreamStats;
}

export function embeddingServiceHandlers(deps: EmbeddingServiceDeps): grpc.UntypedServiceImplementation {
  const { models, limits, gate, logger } = deps;
  const shared: EmbeddingHandlerDeps = {
    models,
    limits,
    unary: <Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) =>
      unaryHandler<Req, Res>(method, gate, logger, fn),
  };
  return {
    EmbedText: embedTextHandler(shared),
    EmbedImage: embedImageHandler(shared),
    EmbedStream: embedStreamHandler({
      models,
      gate,
      logger,
      limits,
      window: deps.streamWindow,
      stats: deps.streamStats,
    }),
    Similarity: similarityHandler(shared),
    Rank: rankHandler(shared),
    Classify: classifyHandler(shared),
    GetModelInfo: getModelInfoHandler(shared),
  };
}
