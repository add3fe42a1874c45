/**
 * clipserve.v1.EmbeddingService handlers. Thin: validate, queue items through the embedder, and
 * apply CLIP's heads (normalize, scaled cosine logits, softmax) to the results. No model runtime
 * here; the embedder and the model info come in as dependencies.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ServedModelInfo } from '../serve/model-port';
import type { TextEmbedding } from '../serve/embedder';
import { CallContext, CallGate, unaryHandler } from './call-context';
import { embedStreamHandler, StreamStats } from './embed-stream';
import type * as m from './messages';
import { EmbedderPort, RequestWork } from './request-work';
import { invalidArgument } from './status';
import { checkCount, checkLabels, checkModelVersion, checkTemplates, checkTextLength, checkTextLengths, checkTotal, RequestLimits } from './validate';
import { dot, embeddingMessage, l2normalized, mean, softmax } from './vectors';

export interface EmbeddingServiceDeps {
  embedder: EmbedderPort;
  /** The model being served (a function: a later hot-swap changes it). */
  modelInfo: () => ServedModelInfo;
  limits: RequestLimits;
  gate: CallGate;
  logger: Logger;
  /** EmbedStream: most items per stream read but not yet sent before reading pauses. */
  streamWindow: number;
  streamStats?: StreamStats;
}

export function embeddingServiceHandlers(deps: EmbeddingServiceDeps): grpc.UntypedServiceImplementation {
  const { embedder, modelInfo, limits, gate, logger } = deps;
  const unary = <Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) => unaryHandler<Req, Res>(method, gate, logger, fn);

  const vectorOf = (raw: boolean) => (v: Float32Array) => (raw ? v : l2normalized(v));

  return {
    EmbedText: unary<m.EmbedTextRequest, m.EmbedTextResponse>('EmbedText', async (req, ctx) => {
      const info = modelInfo();
      checkModelVersion(req.modelVersion, info.version);
      checkCount('texts', req.texts.length, 1, limits);
      checkTextLengths('texts', req.texts, limits);
      const results = await new RequestWork(embedder, ctx).texts(req.texts, 'texts');
      const out = vectorOf(req.raw);
      return {
        embeddings: results.map((r) => embeddingMessage(out(r.vector), req.format, r.truncated)),
        dim: info.embedDim,
        modelVersion: info.version,
      };
    }),

    EmbedImage: unary<m.EmbedImageRequest, m.EmbedImageResponse>('EmbedImage', async (req, ctx) => {
      const info = modelInfo();
      checkModelVersion(req.modelVersion, info.version);
      checkCount('images', req.images.length, 1, limits);
      const results = await new RequestWork(embedder, ctx).images(req.images, 'images');
      const out = vectorOf(req.raw);
      return {
        embeddings: results.map((v) => embeddingMessage(out(v), req.format)),
        dim: info.embedDim,
        modelVersion: info.version,
      };
    }),

    EmbedStream: embedStreamHandler({ embedder, modelInfo, gate, logger, limits, window: deps.streamWindow, stats: deps.streamStats }),

    Similarity: unary<m.SimilarityRequest, m.SimilarityResponse>('Similarity', async (req, ctx) => {
      const info = modelInfo();
      checkModelVersion(req.modelVersion, info.version);
      checkCount('images', req.images.length, 1, limits);
      checkCount('texts', req.texts.length, 1, limits);
      checkTotal('images + texts', req.images.length + req.texts.length, limits);
      checkTextLengths('texts', req.texts, limits);
      const work = new RequestWork(embedder, ctx);
      const imagesP = work.images(req.images, 'images');
      const textsP = work.texts(req.texts, 'texts');
      const [imgs, txts] = await Promise.all([imagesP, textsP]);
      const img = imgs.map((v) => l2normalized(v));
      const txt = txts.map((t) => l2normalized(t.vector));
      // model(image, text): logits_per_image = logit_scale · img @ txt.T; probs = softmax(dim=-1).
      const logits = img.map((i) => txt.map((t) => info.logitScale * dot(i, t)));
      return {
        logitsPerImage: logits.map((row) => ({ values: row })),
        logitsPerText: txt.map((_, j) => ({ values: logits.map((row) => row[j]) })),
        probs: logits.map((row) => ({ values: softmax(row) })),
        textTruncated: txts.map((t) => t.truncated),
        logitScale: info.logitScale,
        modelVersion: info.version,
      };
    }),

    Rank: unary<m.RankRequest, m.RankResponse>('Rank', async (req, ctx) => {
      const info = modelInfo();
      checkModelVersion(req.modelVersion, info.version);
      if (req.query === undefined) throw invalidArgument('query: one of query_text or query_image is required');
      const nCandidates = req.candidateTexts.length + req.candidateImages.length;
      if (nCandidates === 0) checkCount('candidate_texts + candidate_images', 0, 1, limits);
      checkTotal('query + candidates', 1 + nCandidates, limits);
      if (req.query === 'queryText') checkTextLength('query_text', req.queryText ?? '', limits);
      checkTextLengths('candidate_texts', req.candidateTexts, limits);
      const work = new RequestWork(embedder, ctx);
      const queryP: Promise<Float32Array> =
        req.query === 'queryText'
          ? work.texts([req.queryText ?? ''], 'query_text').then((r) => r[0].vector)
          : work.images([req.queryImage ?? Buffer.alloc(0)], 'query_image').then((r) => r[0]);
      const textsP = req.candidateTexts.length > 0 ? work.texts(req.candidateTexts, 'candidate_texts') : Promise.resolve([] as TextEmbedding[]);
      const imagesP = req.candidateImages.length > 0 ? work.images(req.candidateImages, 'candidate_images') : Promise.resolve([] as Float32Array[]);
      const [queryRaw, texts, images] = await Promise.all([queryP, textsP, imagesP]);
      const query = l2normalized(queryRaw);
      const candidates = [
        ...texts.map((t, index) => ({ modality: 'MODALITY_TEXT' as const, index, score: dot(query, l2normalized(t.vector)) })),
        ...images.map((v, index) => ({ modality: 'MODALITY_IMAGE' as const, index, score: dot(query, l2normalized(v)) })),
      ];
      const logits = candidates.map((c) => info.logitScale * c.score);
      const probs = softmax(logits);
      const ranked = candidates.map((c, k) => ({ ...c, logit: logits[k], probability: probs[k], order: k }));
      // Best first; equal scores keep input order (texts, then images), so results are deterministic.
      ranked.sort((a, b) => b.score - a.score || a.order - b.order);
      const kept = req.topK > 0 ? ranked.slice(0, req.topK) : ranked;
      return {
        results: kept.map(({ modality, index, score, logit, probability }) => ({ modality, index, score, logit, probability })),
        modelVersion: info.version,
      };
    }),

    Classify: unary<m.ClassifyRequest, m.ClassifyResponse>('Classify', async (req, ctx) => {
      const info = modelInfo();
      checkModelVersion(req.modelVersion, info.version);
      checkCount('images', req.images.length, 1, limits);
      checkLabels(req.labels, limits);
      const templates = checkTemplates(req.templates);
      // A replacer function: a string replacement would expand `$&`, `$'`… inside the label.
      const prompts = req.labels.flatMap((label) => templates.map((t) => t.replace('{}', () => label)));
      checkTotal('labels × templates', prompts.length, limits);
      checkTotal('images + labels × templates', req.images.length + prompts.length, limits);
      checkTextLengths('prompts', prompts, limits);
      const work = new RequestWork(embedder, ctx);
      const [imgs, promptEmbeddings] = await Promise.all([work.images(req.images, 'images'), work.texts(prompts, 'prompts')]);
      // open_clip build_zero_shot_classifier: per class, normalize each template embedding,
      // average them, normalize the mean.
      const classWeights = req.labels.map((_, c) =>
        l2normalized(mean(promptEmbeddings.slice(c * templates.length, (c + 1) * templates.length).map((p) => l2normalized(p.vector)))),
      );
      return {
        classifications: imgs.map((raw) => {
          const img = l2normalized(raw);
          const logits = classWeights.map((w) => info.logitScale * dot(img, w));
          const probs = softmax(logits);
          const scored = req.labels.map((label, index) => ({ label, index, probability: probs[index], logit: logits[index] }));
          scored.sort((a, b) => b.probability - a.probability || a.index - b.index);
          return { labels: req.topK > 0 ? scored.slice(0, req.topK) : scored };
        }),
        modelVersion: info.version,
      };
    }),

    GetModelInfo: unary<m.GetModelInfoRequest, m.GetModelInfoResponse>('GetModelInfo', async () => {
      const info = modelInfo();
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
      };
    }),
  };
}

