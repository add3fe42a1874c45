/**
 * Shapes of the clipserve.v1 messages as @grpc/proto-loader hands them over with the options in
 * ./proto.ts (camelCase fields, enums as strings, 64-bit integers as numbers, defaults filled,
 * bytes as Buffer, a virtual field naming the set member of each oneof). Internal: the public API
 * converts to the friendlier types in ./types.ts.
 */

import type { ModelInfo, ServerLimits } from './types.js';

export type WireEmbeddingFormat = 'EMBEDDING_FORMAT_UNSPECIFIED' | 'EMBEDDING_FORMAT_FLOATS' | 'EMBEDDING_FORMAT_F32LE_BYTES';
export type WireModality = 'MODALITY_UNSPECIFIED' | 'MODALITY_TEXT' | 'MODALITY_IMAGE';

export interface WireEmbedding {
  values: number[];
  valuesF32le: Buffer;
  truncated: boolean;
}

export interface WireItemStatus {
  code: number;
  message: string;
}

export interface WireScoreRow {
  values: number[];
}

export interface EmbedTextRequest {
  texts: string[];
  raw?: boolean;
  format?: WireEmbeddingFormat;
  modelVersion?: string;
}

export interface EmbedImageRequest {
  images: Buffer[];
  raw?: boolean;
  format?: WireEmbeddingFormat;
  modelVersion?: string;
}

export interface EmbedResponse {
  embeddings: WireEmbedding[];
  dim: number;
  modelVersion: string;
}

export interface EmbedStreamRequest {
  id: string;
  text?: string;
  image?: Buffer;
  raw?: boolean;
  format?: WireEmbeddingFormat;
  modelVersion?: string;
}

export interface EmbedStreamResponse {
  id: string;
  result?: 'embedding' | 'error';
  embedding?: WireEmbedding | null;
  error?: WireItemStatus | null;
  modality: WireModality;
  modelVersion: string;
}

export interface SimilarityRequest {
  images: Buffer[];
  texts: string[];
  modelVersion?: string;
}

export interface SimilarityResponse {
  logitsPerImage: WireScoreRow[];
  logitsPerText: WireScoreRow[];
  probs: WireScoreRow[];
  textTruncated: boolean[];
  logitScale: number;
  modelVersion: string;
}

export interface RankRequest {
  queryText?: string;
  queryImage?: Buffer;
  candidateTexts: string[];
  candidateImages: Buffer[];
  topK?: number;
  modelVersion?: string;
}

export interface WireRankedCandidate {
  modality: WireModality;
  index: number;
  score: number;
  logit: number;
  probability: number;
}

export interface RankResponse {
  results: WireRankedCandidate[];
  modelVersion: string;
}

export interface ClassifyRequest {
  images: Buffer[];
  labels: string[];
  templates: string[];
  topK?: number;
  modelVersion?: string;
}

export interface WireLabelScore {
  label: string;
  index: number;
  probability: number;
  logit: number;
}

export interface ClassifyResponse {
  classifications: { labels: WireLabelScore[] }[];
  modelVersion: string;
}

/** The public ModelInfo as it arrives: `limits` is a message field, absent from older servers. */
export interface GetModelInfoResponse extends Omit<ModelInfo, 'limits' | 'activeVersion' | 'loadedVersions'> {
  limits?: ServerLimits | null;
  activeVersion?: string;
  loadedVersions?: string[];
}

export interface HealthCheckResponse {
  status: 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
}
