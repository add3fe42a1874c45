/**
 * EmbedText and EmbedImage: validate, queue the items through the leased version's embedder, and
 * answer their vectors (L2-normalized unless `raw`).
 */
import type * as grpc from '@grpc/grpc-js';
import type { EmbeddingHandlerDeps } from './embedding-handler-deps';
import type * as m from './messages';
import { withModel } from './model-resolver';
import { RequestWork } from './request-work';
import { checkCount, checkModelVersion, checkTextLengths } from './validate';
import { l2normalized } from '../inference/heads';
import { embeddingMessage } from './vectors';

const vectorOf = (raw: boolean) => (v: Float32Array) => (raw ? v : l2normalized(v));

export function embedTextHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.EmbedTextRequest, m.EmbedTextResponse> {
  return unary<m.EmbedTextRequest, m.EmbedTextResponse>('EmbedText', async (req, ctx) => {
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
  });
}

export function embedImageHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.EmbedImageRequest, m.EmbedImageResponse> {
  return unary<m.EmbedImageRequest, m.EmbedImageResponse>('EmbedImage', async (req, ctx) => {
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
  });
}
