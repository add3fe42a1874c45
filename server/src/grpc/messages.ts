/**
 * The clipserve.v1 EmbeddingService messages as the handlers see them, named once over the types
 * generated from proto/ (./generated, `npm run gen:proto`) with the loader options of ./proto.ts.
 * Requests are the generated `__Output` types (what proto-loader hands a handler: camelCase
 * fields, enums as their names, 64-bit integers as numbers, bytes as Buffer, defaults filled in,
 * the name of the set member of each oneof); responses are the generated input types (what
 * proto-loader accepts to serialize), with every top-level field required where the message has
 * no oneof, so a handler cannot leave one out by mistake.
 */
import type { EmbeddingFormat__Output } from './generated/clipserve/v1/EmbeddingFormat';
import type { Modality__Output } from './generated/clipserve/v1/Modality';
import type { Embedding } from './generated/clipserve/v1/Embedding';
import type { EmbedTextRequest__Output } from './generated/clipserve/v1/EmbedTextRequest';
import type { EmbedTextResponse as EmbedTextResponseMsg } from './generated/clipserve/v1/EmbedTextResponse';
import type { EmbedImageRequest__Output } from './generated/clipserve/v1/EmbedImageRequest';
import type { EmbedImageResponse as EmbedImageResponseMsg } from './generated/clipserve/v1/EmbedImageResponse';
import type { EmbedStreamRequest__Output } from './generated/clipserve/v1/EmbedStreamRequest';
import type { EmbedStreamResponse as EmbedStreamResponseMsg } from './generated/clipserve/v1/EmbedStreamResponse';
import type { SimilarityRequest__Output } from './generated/clipserve/v1/SimilarityRequest';
import type { SimilarityResponse as SimilarityResponseMsg } from './generated/clipserve/v1/SimilarityResponse';
import type { RankRequest__Output } from './generated/clipserve/v1/RankRequest';
import type { RankResponse as RankResponseMsg } from './generated/clipserve/v1/RankResponse';
import type { ClassifyRequest__Output } from './generated/clipserve/v1/ClassifyRequest';
import type { ClassifyResponse as ClassifyResponseMsg } from './generated/clipserve/v1/ClassifyResponse';
import type { GetModelInfoRequest__Output } from './generated/clipserve/v1/GetModelInfoRequest';
import type { GetModelInfoResponse as GetModelInfoResponseMsg } from './generated/clipserve/v1/GetModelInfoResponse';

export type EmbeddingFormatName = EmbeddingFormat__Output;
export type ModalityName = Modality__Output;
export type EmbeddingMsg = Embedding;

export type EmbedTextRequest = EmbedTextRequest__Output;
export type EmbedTextResponse = Required<EmbedTextResponseMsg>;
export type EmbedImageRequest = EmbedImageRequest__Output;
export type EmbedImageResponse = Required<EmbedImageResponseMsg>;
export type EmbedStreamRequest = EmbedStreamRequest__Output;
export type EmbedStreamResponse = EmbedStreamResponseMsg;
export type SimilarityRequest = SimilarityRequest__Output;
export type SimilarityResponse = Required<SimilarityResponseMsg>;
export type RankRequest = RankRequest__Output;
export type RankResponse = Required<RankResponseMsg>;
export type ClassifyRequest = ClassifyRequest__Output;
export type ClassifyResponse = Required<ClassifyResponseMsg>;
export type GetModelInfoRequest = GetModelInfoRequest__Output;
export type GetModelInfoResponse = Required<GetModelInfoResponseMsg>;
