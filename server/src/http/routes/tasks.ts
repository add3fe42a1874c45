/**
 * POST /v1/similarity, /v1/rank and /v1/classify: the gRPC Similarity, Rank and Classify calls as
 * plain JSON (fields as the proto names them, images as data: URIs or base64), computed by the
 * same code (grpc/clip-tasks.ts) over the same batchers. POST /v1/rerank is Rank in the rerank
 * shape RAG stacks call (Jina, Cohere; served by vLLM, Infinity and TEI too).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RequestWork } from '../../grpc/request-work';
import { classify, rank, similarity } from '../../grpc/clip-tasks';
import { EMBED_REQUIREMENT } from '../auth';
import { withCall } from '../call';
import type { HttpApiDeps, ServedModel } from '../deps';
import type { ImageDecoder } from '../embedding-input';
import { ApiError } from '../errors';
import {
  ClassifyRequest,
  ClassifyResponse,
  errorResponses,
  RankRequest,
  RankResponse,
  RerankRequest,
  RerankResponse,
  SimilarityRequest,
  SimilarityResponse,
  type ClassifyBody,
  type RankBody,
  type RerankBody,
  type SimilarityBody,
} from '../schemas';
import { withServedModel } from './embeddings';

type Task<B> = (body: B, served: ServedModel, work: RequestWork) => Promise<Record<string, unknown>>;

export function registerTasks(app: FastifyInstance, deps: HttpApiDeps, decodeImage: ImageDecoder): void {
  const images = (refs: readonly string[] | undefined, field: string) =>
    Promise.all((refs ?? []).map((ref, i) => decodeImage(ref, `${field}[${i}]`)));
  /** A route that resolves `model`, runs `task` inside the gate, and tags the answer with the version. */
  const route = <B extends { model?: string }>(
    path: string,
    summary: string,
    body: unknown,
    response: unknown,
    task: Task<B>,
  ) =>
    app.post<{ Body: B }>(
      path,
      {
        config: { requirement: EMBED_REQUIREMENT },
        schema: {
          summary,
          body,
          response: { 200: response, ...errorResponses(400, 401, 403, 404, 413, 415, 429, 503) },
        },
      },
      async (request: FastifyRequest<{ Body: B }>, reply: FastifyReply) =>
        withCall(deps.gate, deps.logger, request, reply, async (ctx) => {
          // The schema validated the body: it is a B.
          const body = request.body as B;
          return withServedModel(deps, body.model ?? '', async (served) => {
            const result = await task(body, served, new RequestWork(served.embedder, ctx));
            return { ...result, model: served.info.version };
          });
        }),
    );

  route<SimilarityBody>(
    '/v1/similarity',
    'CLIP logits and probabilities of every image against every text',
    SimilarityRequest,
    SimilarityResponse,
    async (body, served, work) => {
      const r = await similarity(
        work,
        served.info.logitScale,
        await images(body.images, 'images'),
        body.texts,
        deps.limits,
      );
      return {
        logits_per_image: r.logitsPerImage,
        logits_per_text: r.logitsPerText,
        probs: r.probs,
        text_truncated: r.textTruncated,
        logit_scale: served.info.logitScale,
      };
    },
  );

  route<RankBody>(
    '/v1/rank',
    'Rank text and image candidates against one text or image query',
    RankRequest,
    RankResponse,
    async (body, served, work) => {
      if (body.query_text !== undefined && body.query_image !== undefined)
        throw ApiError.invalid('query: give one of query_text and query_image, not both', 'query_image');
      const query =
        body.query_text !== undefined
          ? { text: body.query_text }
          : body.query_image !== undefined
            ? { image: await decodeImage(body.query_image, 'query_image') }
            : undefined;
      const results = await rank(
        work,
        served.info.logitScale,
        query,
        body.candidate_texts ?? [],
        await images(body.candidate_images, 'candidate_images'),
        body.top_k ?? 0,
        deps.limits,
      );
      return { results };
    },
  );

  route<RerankBody>(
    '/v1/rerank',
    'Rerank documents (texts or images) against a query (Jina / Cohere rerank shape)',
    RerankRequest,
    RerankResponse,
    async (body, served, work) => {
      const q = body.query;
      const query =
        typeof q === 'string'
          ? { text: q }
          : 'text' in q
            ? { text: q.text }
            : { image: await decodeImage(q.image, 'query') };
      // Texts and images rank together; each result maps back to its place in `documents`.
      const [texts, textAt, imageRefs, imageAt]: [string[], number[], string[], number[]] = [[], [], [], []];
      body.documents.forEach((d, i) => {
        if (typeof d === 'string' || 'text' in d) {
          texts.push(typeof d === 'string' ? d : d.text);
          textAt.push(i);
        } else {
          imageRefs.push(d.image);
          imageAt.push(i);
        }
      });
      const imageBytes = await Promise.all(imageRefs.map((ref, k) => decodeImage(ref, `documents[${imageAt[k]}]`)));
      const ranked = await rank(work, served.info.logitScale, query, texts, imageBytes, body.top_n ?? 0, deps.limits, {
        query: 'query',
        candidateTexts: (k) => `documents[${textAt[k]}]`,
        candidateImages: (k) => `documents[${imageAt[k]}]`,
      });
      return {
        results: ranked.map((r) => ({
          index: r.modality === 'text' ? textAt[r.index] : imageAt[r.index],
          relevance_score: r.score,
          ...(r.modality === 'text' && body.return_documents !== false ? { document: { text: texts[r.index] } } : {}),
        })),
      };
    },
  );

  route<ClassifyBody>(
    '/v1/classify',
    'Zero-shot classification of images over labels (open_clip prompt ensembling)',
    ClassifyRequest,
    ClassifyResponse,
    async (body, served, work) => {
      const perImage = await classify(
        work,
        served.info.logitScale,
        await images(body.images, 'images'),
        body.labels,
        body.templates ?? [],
        body.top_k ?? 0,
        deps.limits,
      );
      return { classifications: perImage.map((labels) => ({ labels })) };
    },
  );
}
