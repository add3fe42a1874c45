/**
 * The clipserve.v1 messages as @grpc/proto-loader hands them to handlers with PROTO_LOADER_OPTIONS
 * (server/src/grpc/proto.ts): camelCase fields, enums as their names, 64-bit integers as numbers,
 * bytes as Buffer, defaults filled in, and the name of the set member of each oneof.
 */
import type { ServedModelInfo } from '../inference/model-port';
import type { RequestLimits } from './validate';

export type EmbeddingFormatName = 'EMBEDDING_FORMAT_UNSPECIFIED' | 'EMBEDDING_FORMAT_FLOATS' | 'EMBEDDING_FORMAT_F32LE_BYTES';
export type ModalityName = 'MODALITY_UNSPECIFIED' | 'MODALITY_TEXT' | 'MODALITY_IMAGE';

export interface EmbeddingMsg {
  values?: number[];
  valuesF32le?: Buffer;
  truncated?: boolean;
}

export interface ItemStatusMsg {
  code: number;
  message: string;
}

export interface ScoreRowMsg {
  values: number[];
}

export interface EmbedTextRequest {
  texts: string[];
  raw: boolean;
  format: EmbeddingFormatName;
  modelVersion: string;
}

export interface EmbedTextResponse {
  embeddings: EmbeddingMsg[];
  dim: number;
  modelVersion: string;
}

export interface EmbedImageRequest {
  images: Buffer[];
  raw: boolean;
  format: EmbeddingFormatName;
  modelVersion: string;
}

export type EmbedImageResponse = EmbedTextResponse;

export interface EmbedStreamRequest {
  id: string;
  input?: 'text' | 'image';
  text?: string;
  image?: Buffer;
  raw: boolean;
  format: EmbeddingFormatName;
  modelVersion: string;
}

export interface EmbedStreamResponse {
  id: string;
  embedding?: EmbeddingMsg;
  error?: ItemStatusMsg;
  modality: ModalityName;
  modelVersion: string;
}

export interface SimilarityRequest {
  images: Buffer[];
  texts: string[];
  modelVersion: string;
}

export interface SimilarityResponse {
  logitsPerImage: ScoreRowMsg[];
  logitsPerText: ScoreRowMsg[];
  probs: ScoreRowMsg[];
  textTruncated: boolean[];
  logitScale: number;
  modelVersion: string;
}

export interface RankRequest {
  query?: 'queryText' | 'queryImage';
  queryText?: string;
  queryImage?: Buffer;
  candidateTexts: string[];
  candidateImages: Buffer[];
  topK: number;
  modelVersion: string;
}

export interface RankedCandidateMsg {
  modality: ModalityName;
  index: number;
  score: number;
  logit: number;
  probability: number;
}

export interface RankResponse {
  results: RankedCandidateMsg[];
  modelVersion: string;
}

export interface ClassifyRequest {
  images: Buffer[];
  labels: string[];
  templates: string[];
  topK: number;
  modelVersion: string;
}

export interface LabelScoreMsg {
  label: string;
  index: number;
  probability: number;
  logit: number;
}

export interface ClassifyResponse {
  classifications: { labels: LabelScoreMsg[] }[];
  modelVersion: string;
}

export interface GetModelInfoRequest {
  modelVersion: string;
}

/** The per-request limits (grpc/validate), as GetModelInfo reports them. */
export type ServerLimitsMsg = RequestLimits;

/** The served model's info (runtime ModelInfo) plus the limits and the loaded versions. */
export interface GetModelInfoResponse extends ServedModelInfo {
  limits: ServerLimitsMsg;
  activeVersion: string;
  loadedVersions: string[];
}
