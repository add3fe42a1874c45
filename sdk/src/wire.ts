/**
 * The clipserve.v1 EmbeddingService and grpc.health.v1 messages the client exchanges, named once
 * over the types generated from the .proto files (./generated/wire, `npm run gen:proto` at the
 * repository root) with the loader options of ./proto.ts. Requests are the generated input types
 * (what proto-loader accepts to serialize); responses are the `__Output` types (what it hands
 * over: camelCase fields, enums as strings, 64-bit integers as numbers, defaults filled, bytes as
 * Buffer, a virtual field naming the set member of each oneof). Internal: the public API converts
 * to the friendlier types in ./types.ts.
 */
import type { Embedding__Output } from './generated/wire/clipserve/v1/Embedding.js';
import type { Modality__Output } from './generated/wire/clipserve/v1/Modality.js';
import type { EmbeddingFormat } from './generated/wire/clipserve/v1/EmbeddingFormat.js';
import type { EmbedTextRequest as EmbedTextRequestMsg } from './generated/wire/clipserve/v1/EmbedTextRequest.js';
import type { EmbedImageRequest as EmbedImageRequestMsg } from './generated/wire/clipserve/v1/EmbedImageRequest.js';
import type { EmbedTextResponse__Output } from './generated/wire/clipserve/v1/EmbedTextResponse.js';
import type { EmbedStreamRequest as EmbedStreamRequestMsg } from './generated/wire/clipserve/v1/EmbedStreamRequest.js';
import type { EmbedStreamResponse__Output } from './generated/wire/clipserve/v1/EmbedStreamResponse.js';
import type { SimilarityRequest as SimilarityRequestMsg } from './generated/wire/clipserve/v1/SimilarityRequest.js';
import type { SimilarityResponse__Output } from './generated/wire/clipserve/v1/SimilarityResponse.js';
import type { RankRequest as RankRequestMsg } from './generated/wire/clipserve/v1/RankRequest.js';
import type { RankResponse__Output } from './generated/wire/clipserve/v1/RankResponse.js';
import type { ClassifyRequest as ClassifyRequestMsg } from './generated/wire/clipserve/v1/ClassifyRequest.js';
import type { ClassifyResponse__Output } from './generated/wire/clipserve/v1/ClassifyResponse.js';
import type { GetModelInfoRequest as GetModelInfoRequestMsg } from './generated/wire/clipserve/v1/GetModelInfoRequest.js';
import type { GetModelInfoResponse__Output } from './generated/wire/clipserve/v1/GetModelInfoResponse.js';
import type { HealthCheckRequest as HealthCheckRequestMsg } from './generated/wire/grpc/health/v1/HealthCheckRequest.js';
import type { HealthCheckResponse__Output } from './generated/wire/grpc/health/v1/HealthCheckResponse.js';

export type WireEmbeddingFormat = EmbeddingFormat;
export type WireModality = Modality__Output;
export type WireEmbedding = Embedding__Output;

export type EmbedTextRequest = EmbedTextRequestMsg;
export type EmbedImageRequest = EmbedImageRequestMsg;
/** EmbedText and EmbedImage answer with the same fields. */
export type EmbedResponse = EmbedTextResponse__Output;
export type EmbedStreamRequest = EmbedStreamRequestMsg;
export type EmbedStreamResponse = EmbedStreamResponse__Output;
export type SimilarityRequest = SimilarityRequestMsg;
export type SimilarityResponse = SimilarityResponse__Output;
export type RankRequest = RankRequestMsg;
export type RankResponse = RankResponse__Output;
export type ClassifyRequest = ClassifyRequestMsg;
export type ClassifyResponse = ClassifyResponse__Output;
export type GetModelInfoRequest = GetModelInfoRequestMsg;
/** `limits` is null and the version fields are empty when an older server does not send them. */
export type GetModelInfoResponse = GetModelInfoResponse__Output;
export type HealthCheckRequest = HealthCheckRequestMsg;
export type HealthCheckResponse = HealthCheckResponse__Output;
