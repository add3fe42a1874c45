/**
 * JSON schemas (TypeBox) of the HTTP API: fastify validates requests with them before a handler
 * runs, and @fastify/swagger turns the same schemas into the OpenAPI document the server serves,
 * so the documentation cannot drift from what is enforced.
 */
import { Type, type Static } from '@sinclair/typebox';

const ImageRef = Type.String({
  description:
    'a data:image/...;base64, URI or base64-encoded image bytes (PNG, JPEG, WebP, GIF, ...); URLs are not fetched',
});

export const InputItem = Type.Union([
  Type.String({ description: 'a text, or an image reference when "modality" is "image"' }),
  Type.Object({ text: Type.String() }, { additionalProperties: false, description: 'a text (Jina style)' }),
  Type.Object({ image: ImageRef }, { additionalProperties: false, description: 'an image (Jina style)' }),
]);

export const EmbeddingsRequest = Type.Object(
  {
    input: Type.Union([Type.String(), Type.Array(InputItem)], {
      description:
        'one text, or a list of texts and images. Token-id arrays (OpenAI accepts tiktoken ids) are refused with 400: CLIP has its own vocabulary, so send the text.',
    }),
    model: Type.String({ description: 'a served model version (GET /v1/models); "" means the active one' }),
    encoding_format: Type.Optional(
      Type.Union([Type.Literal('float'), Type.Literal('base64')], {
        description: 'base64: little-endian float32 bytes, as OpenAI',
        default: 'float',
      }),
    ),
    dimensions: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: "only the model's own embedding size is accepted: CLIP embeddings cannot be shortened",
      }),
    ),
    modality: Type.Optional(
      Type.Union([Type.Literal('text'), Type.Literal('image')], {
        description: 'Infinity style: "image" reads string inputs as image references',
        default: 'text',
      }),
    ),
    user: Type.Optional(Type.String({ description: 'accepted for OpenAI compatibility; ignored' })),
  },
  { additionalProperties: false },
);
export type EmbeddingsRequestBody = Static<typeof EmbeddingsRequest>;
export type InputItemValue = Static<typeof InputItem>;

export const EmbeddingsResponse = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(
    Type.Object({
      object: Type.Literal('embedding'),
      index: Type.Integer(),
      embedding: Type.Union([
        Type.Array(Type.Number()),
        Type.String({ description: 'base64 of little-endian float32' }),
      ]),
    }),
  ),
  model: Type.String({ description: 'the model version that produced the embeddings' }),
  usage: Type.Object({
    prompt_tokens: Type.Integer({
      description:
        'CLIP tokens the model read for the texts (start and end tokens included, at most the context length each); images count 0',
    }),
    total_tokens: Type.Integer(),
  }),
});

export const ModelObject = Type.Object({
  id: Type.String({ description: 'the model version; pass it as "model"' }),
  object: Type.Literal('model'),
  created: Type.Integer({ description: 'unix seconds when this server started serving it' }),
  owned_by: Type.String(),
  name: Type.String({ description: 'the architecture, e.g. ViT-B-32' }),
  dimensions: Type.Integer(),
  context_length: Type.Integer(),
  image_size: Type.Integer(),
  modalities: Type.Array(Type.String()),
  demo: Type.Boolean({ description: 'the random-weight demo bundle: embeddings are meaningless' }),
});
export type ModelObjectValue = Static<typeof ModelObject>;

export const ModelList = Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelObject) });

// ---- /v1/similarity, /v1/rank, /v1/classify: the gRPC messages as JSON (proto field names) ----

const OptionalModel = Type.Optional(
  Type.String({ description: 'a served model version (GET /v1/models); omitted or "" means the active one' }),
);
const TopK = Type.Optional(Type.Integer({ minimum: 0, description: 'keep only the best k (0 or omitted: all)' }));
const Floats = Type.Array(Type.Number());

export const SimilarityRequest = Type.Object(
  { model: OptionalModel, images: Type.Array(ImageRef), texts: Type.Array(Type.String()) },
  { additionalProperties: false },
);
export type SimilarityBody = Static<typeof SimilarityRequest>;
export const SimilarityResponse = Type.Object({
  logits_per_image: Type.Array(Floats, { description: 'logit_scale · cosine, one row per image' }),
  logits_per_text: Type.Array(Floats, { description: 'the transpose: one row per text' }),
  probs: Type.Array(Floats, { description: 'per image, softmax over the texts' }),
  text_truncated: Type.Array(Type.Boolean()),
  logit_scale: Type.Number(),
  model: Type.String(),
});

export const RankRequest = Type.Object(
  {
    model: OptionalModel,
    query_text: Type.Optional(Type.String()),
    query_image: Type.Optional(ImageRef),
    candidate_texts: Type.Optional(Type.Array(Type.String())),
    candidate_images: Type.Optional(Type.Array(ImageRef)),
    top_k: TopK,
  },
  { additionalProperties: false, description: 'exactly one of query_text and query_image' },
);
export type RankBody = Static<typeof RankRequest>;
export const RankResponse = Type.Object({
  results: Type.Array(
    Type.Object({
      modality: Type.Union([Type.Literal('text'), Type.Literal('image')]),
      index: Type.Integer({ description: 'position in candidate_texts or candidate_images' }),
      score: Type.Number({ description: 'cosine similarity to the query' }),
      logit: Type.Number(),
      probability: Type.Number({ description: 'softmax of the logits over all candidates' }),
    }),
    { description: 'best first' },
  ),
  model: Type.String(),
});

export const ClassifyRequest = Type.Object(
  {
    model: OptionalModel,
    images: Type.Array(ImageRef),
    labels: Type.Array(Type.String()),
    templates: Type.Optional(
      Type.Array(Type.String(), {
        description: 'prompt templates with one "{}" for the label (default: "a photo of a {}.")',
      }),
    ),
    top_k: TopK,
  },
  { additionalProperties: false },
);
export type ClassifyBody = Static<typeof ClassifyRequest>;
export const ClassifyResponse = Type.Object({
  classifications: Type.Array(
    Type.Object({
      labels: Type.Array(
        Type.Object({ label: Type.String(), index: Type.Integer(), probability: Type.Number(), logit: Type.Number() }),
        { description: 'most probable first' },
      ),
    }),
    { description: 'one per image' },
  ),
  model: Type.String(),
});

// ---- /v1/rerank: the Jina / Cohere rerank shape (vLLM, Infinity and TEI serve it too) ----

export const RerankRequest = Type.Object(
  {
    model: OptionalModel,
    query: Type.Union(
      [
        Type.String(),
        Type.Object({ text: Type.String() }, { additionalProperties: false }),
        Type.Object({ image: ImageRef }, { additionalProperties: false }),
      ],
      {
        description: 'a text, or {"text"} / {"image"}',
      },
    ),
    documents: Type.Array(InputItem, { description: 'texts, {"text"} and {"image"} items' }),
    top_n: Type.Optional(Type.Integer({ minimum: 0, description: 'keep only the best n (0 or omitted: all)' })),
    return_documents: Type.Optional(
      Type.Boolean({ description: 'echo text documents in the results (default true); images are never echoed' }),
    ),
  },
  { additionalProperties: false },
);
export type RerankBody = Static<typeof RerankRequest>;
export const RerankResponse = Type.Object({
  results: Type.Array(
    Type.Object({
      index: Type.Integer({ description: 'position in documents' }),
      relevance_score: Type.Number({ description: 'CLIP cosine similarity of the document to the query' }),
      document: Type.Optional(Type.Object({ text: Type.String() })),
    }),
    { description: 'most relevant first' },
  ),
  model: Type.String(),
});

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      message: Type.String(),
      type: Type.String(),
      param: Type.Union([Type.String(), Type.Null()]),
      code: Type.Union([Type.String(), Type.Null()]),
    }),
  },
  { $id: 'Error' },
);

/** Shared schemas, added to fastify once and referenced by $id. */
export const SHARED_SCHEMAS = [ErrorResponse];

/** The error responses every authenticated route may send. */
export function errorResponses(...statuses: number[]): Record<number, unknown> {
  return Object.fromEntries(statuses.map((s) => [s, { $ref: 'Error#' }]));
}
