/**
 * POST /v1/embeddings: OpenAI's embeddings endpoint for texts and images. Thin: the items go
 * through the same batchers as gRPC EmbedText/EmbedImage (RequestWork), come back L2-normalized as
 * OpenAI's do (the gRPC default, raw=false), in float or base64 (little-endian float32) form.
 */
import type { FastifyInstance } from 'fastify';
import { RequestWork } from '../../grpc/request-work';
import { checkModelVersion } from '../../grpc/validate';
import { embeddingMessage } from '../../grpc/vectors';
import { l2normalized } from '../../inference/heads';
import { ModelNotFoundError } from '../../versions/registry';
import { withCall } from '../call';
import type { HttpApiDeps, ServedModel } from '../deps';
import { embeddingItems, refuseTokenIds, type ImageDecoder } from '../embedding-input';
import { ApiError } from '../errors';
import { EMBED_REQUIREMENT } from '../auth';
import { EmbeddingsRequest, EmbeddingsResponse, errorResponses, type EmbeddingsRequestBody } from '../schemas';

export function registerEmbeddings(app: FastifyInstance, deps: HttpApiDeps, decodeImage: ImageDecoder): void {
  app.post<{ Body: EmbeddingsRequestBody }>(
    '/v1/embeddings',
    {
      config: { requirement: EMBED_REQUIREMENT },
      schema: {
        summary: 'Embed texts and images (OpenAI-compatible)',
        body: EmbeddingsRequest,
        response: { 200: EmbeddingsResponse, ...errorResponses(400, 401, 403, 404, 413, 415, 429, 503) },
      },
      preValidation: async (request) => refuseTokenIds(request.body),
    },
    async (request, reply) => {
      const body = request.body;
      // Inside the gate: while the model loads or the server drains, the answer is 503.
      return withCall(deps.gate, deps.logger, request, reply, async (ctx) => {
        return withServedModel(deps, body.model, async (served) => {
          const dim = served.info.embedDim;
          if (body.dimensions !== undefined && body.dimensions !== dim) {
            throw ApiError.invalid(
              `dimensions: ${body.dimensions} is not available: model "${served.info.version}" makes ${dim}-dimensional embeddings and CLIP embeddings cannot be shortened; omit dimensions or send ${dim}`,
              'dimensions',
            );
          }
          const items = await embeddingItems(body, deps.limits, decodeImage);
          const [textList, textAt, imageList, imageAt]: [string[], number[], Buffer[], number[]] = [[], [], [], []];
          items.forEach((item, i) => {
            if (item.kind === 'text') {
              textList.push(item.text);
              textAt.push(i);
            } else {
              imageList.push(item.bytes);
              imageAt.push(i);
            }
          });

          const work = new RequestWork(served.embedder, ctx);
          const name = (at: number[]) => (k: number) => `input[${at[k]}]`;
          const textsP = textList.length > 0 ? work.texts(textList, name(textAt)) : Promise.resolve([]);
          const imagesP = imageList.length > 0 ? work.images(imageList, name(imageAt)) : Promise.resolve([]);
          const [texts, images] = await Promise.all([textsP, imagesP]);

          const vectors: Float32Array[] = new Array(items.length);
          texts.forEach((t, k) => (vectors[textAt[k]] = t.vector));
          images.forEach((v, k) => (vectors[imageAt[k]] = v));
          const promptTokens = texts.reduce((sum, t) => sum + t.tokens, 0);
          const base64 = body.encoding_format === 'base64';
          return {
            object: 'list' as const,
            data: vectors.map((raw, index) => {
              const v = l2normalized(raw);
              const embedding = base64
                ? (embeddingMessage(v, 'EMBEDDING_FORMAT_F32LE_BYTES').valuesF32le as Buffer).toString('base64')
                : Array.from(v);
              return { object: 'embedding' as const, index, embedding };
            }),
            model: served.info.version,
            usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
          };
        });
      });
    },
  );
}

/**
 * Runs `fn` on the version `model` names ("" = the active one), leased for the whole request by the
 * resolver gRPC uses for model_version; a version that is not registered is OpenAI's 404 model_not_found.
 */
export async function withServedModel<T>(
  deps: HttpApiDeps,
  model: string,
  fn: (served: ServedModel) => Promise<T>,
): Promise<T> {
  checkModelVersion(model);
  let lease;
  try {
    lease = await deps.models.acquire(model);
  } catch (err) {
    if (err instanceof ModelNotFoundError)
      throw new ApiError(404, `${err.message} (GET /v1/models lists the served versions)`, 'model_not_found', 'model');
    throw err;
  }
  try {
    return await fn(lease);
  } finally {
    lease.release();
  }
}
