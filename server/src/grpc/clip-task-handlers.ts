/**
 * Similarity, Rank and Classify: CLIP's tasks (grpc/clip-tasks.ts, shared with the HTTP API) on
 * the leased version, their results put into the response messages.
 */
import type * as grpc from '@grpc/grpc-js';
import { classify, rank, similarity } from './clip-tasks';
import type { EmbeddingHandlerDeps } from './embedding-handler-deps';
import type * as m from './messages';
import { withModel } from './model-resolver';
import { RequestWork } from './request-work';
import { checkModelVersion } from './validate';

export function similarityHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.SimilarityRequest, m.SimilarityResponse> {
  return unary<m.SimilarityRequest, m.SimilarityResponse>('Similarity', async (req, ctx) => {
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
  });
}

export function rankHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.RankRequest, m.RankResponse> {
  return unary<m.RankRequest, m.RankResponse>('Rank', async (req, ctx) => {
    checkModelVersion(req.modelVersion);
    const query =
      req.query === 'queryText'
        ? { text: req.queryText ?? '' }
        : req.query === 'queryImage'
          ? { image: req.queryImage ?? Buffer.alloc(0) }
          : undefined;
    return withModel(models, req.modelVersion, async ({ info, embedder }) => {
      const ranked = await rank(
        new RequestWork(embedder, ctx),
        info.logitScale,
        query,
        req.candidateTexts,
        req.candidateImages,
        req.topK,
        limits,
      );
      return {
        results: ranked.map((c) => ({
          ...c,
          modality: c.modality === 'text' ? ('MODALITY_TEXT' as const) : ('MODALITY_IMAGE' as const),
        })),
        modelVersion: info.version,
      };
    });
  });
}

export function classifyHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.ClassifyRequest, m.ClassifyResponse> {
  return unary<m.ClassifyRequest, m.ClassifyResponse>('Classify', async (req, ctx) => {
    checkModelVersion(req.modelVersion);
    return withModel(models, req.modelVersion, async ({ info, embedder }) => {
      const perImage = await classify(
        new RequestWork(embedder, ctx),
        info.logitScale,
        req.images,
        req.labels,
        req.templates,
        req.topK,
        limits,
      );
      return { classifications: perImage.map((labels) => ({ labels })), modelVersion: info.version };
    });
  });
}
