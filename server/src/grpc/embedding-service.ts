/**
 * clipserve.v1.EmbeddingService handlers. Thin: validate, queue items through the embedder, and
 * apply CLIP's heads (grpc/clip-tasks.ts over inference/heads.ts, shared with the HTTP API) to the results. No model runtime
 * here; the embedder and the model info come in as dependencies.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { classify, rank, similarity } from './clip-tasks';
import { CallContext, CallGate, unaryHandler } from './call-context';
import { embedStreamHandler, StreamStats } from './embed-stream';
import type * as m from './messages';
import { type ModelResolver, withModel } from './model-resolver';
import { RequestWork } from './request-work';
import { checkCount, checkModelVersion, checkTextLengths, RequestLimits } from './validate';
import { l2normalized } from '../inference/heads';
import { embeddingMessage } from './vectors';

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
  const unary = <Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) => unaryHandler<Req, Res>(method, gate, logger, fn);

  const vectorOf = (raw: boolean) => (v: Float32Array) => (raw ? v : l2normalized(v));

  return {
    EmbedText: unary<m.EmbedTextRequest, m.EmbedTextResponse>('EmbedText', async (req, ctx) => {
      checkModelVersion(req.modelVersion);
      checkCount('texts', req.texts.length, 1, limits);
      checkTextLengths('texts', req.texts, limits);
      return withModel(models, req.modelVersion, async ({ info, embedder }) => {
        const results = await new RequestWork(embedder, ctx).texts(req.texts, 'texts');
        const out = vectorOf(req.raw);
        return {
          embeddings: results.map((r) => embeddingMessage(out(r.vector), req.format, r.truncated)),
          dim: info.embedDim,
          modelVersion: info.version,
        };
      });
    }),

    EmbedImage: unary<m.EmbedImageRequest, m.EmbedImageResponse>('EmbedImage', async (req, ctx) => {
      checkModelVersion(req.modelVersion);
      checkCount('images', req.images.length, 1, limits);
      return withModel(models, req.modelVersion, async ({ info, embedder }) => {
        const results = await new RequestWork(embedder, ctx).images(req.images, 'images');
        const out = vectorOf(req.raw);
        return {
          embeddings: results.map((v) => embeddingMessage(out(v), req.format)),
          dim: info.embedDim,
          modelVersion: info.version,
        };
      });
    }),

    EmbedStream: embedStreamHandler({ models, gate, logger, limits, window: deps.streamWindow, stats: deps.streamStats }),

    Similarity: unary<m.SimilarityRequest, m.SimilarityResponse>('Similarity', async (req, ctx) => {
      checkModelVersion(req.modelVersion);
      return withModel(models, req.modelVersion, async ({ info, embedder }) => {
        const r = await similarity(new RequestWork(embedder, ctx), info.logitScale, req.images, req.texts, limits);
        return {
          logitsPerImage: r.logitsPerImage.map((values) => ({ values })),
          logitsPerText: r.logitsPerText.map((values) => ({ values })),
          probs: r.probs.map((values) => ({ values })),
          textTruncated: r.textTruncated,
          logitScale: info.logitScale,
          modelVersion: info.version,
        };
      });
    }),

    Rank: unary<m.RankRequest, m.RankResponse>('Rank', async (req, ctx) => {
      checkModelVersion(req.modelVersion);
      const query = req.query === 'queryText' ? { text: req.queryText ?? '' } : req.query === 'queryImage' ? { image: req.queryImage ?? Buffer.alloc(0) } : undefined;
      return withModel(models, req.modelVersion, async ({ info, embedder }) => {
        const ranked = await rank(new RequestWork(embedder, ctx), info.logitScale, query, req.candidateTexts, req.candidateImages, req.topK, limits);
        return {
          results: ranked.map((c) => ({ ...c, modality: c.modality === 'text' ? ('MODALITY_TEXT' as const) : ('MODALITY_IMAGE' as const) })),
          modelVersion: info.version,
        };
      });
    }),

    Classify: unary<m.ClassifyRequest, m.ClassifyResponse>('Classify', async (req, ctx) => {
      checkModelVersion(req.modelVersion);
      return withModel(models, req.modelVersion, async ({ info, embedder }) => {
        const perImage = await classify(new RequestWork(embedder, ctx), info.logitScale, req.images, req.labels, req.templates, req.topK, limits);
        return { classifications: perImage.map((labels) => ({ labels })), modelVersion: info.version };
      });
    }),

    GetModelInfo: unary<m.GetModelInfoRequest, m.GetModelInfoResponse>('GetModelInfo', async (req) => {
      checkModelVersion(req.modelVersion ?? '');
      const info = await withModel(models, req.modelVersion ?? '', async (lease) => lease.info);
      const loaded = models.loadedVersions();
      return {
        name: info.name,
        version: info.version,
        embedDim: info.embedDim,
        imageSize: info.imageSize,
        contextLength: info.contextLength,
        logitScale: info.logitScale,
        provider: info.provider,
        demo: info.demo,
        precision: info.precision,
        limits: { ...limits },
        activeVersion: loaded.find((v) => v.active)?.version ?? '',
        loadedVersions: loaded.map((v) => v.version),
      };
    }),
  };
}

