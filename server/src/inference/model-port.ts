/**
 * The ports of the inference core. Downward: the slice of the loaded model (server/src/runtime/model.ts `LoadedModel`) that the serving layer
 * uses. Depending on this narrow shape instead of the runtime module keeps the batching and gRPC
 * code free of onnxruntime, and lets the real LoadedModel satisfy it structurally. Upward: what
 * the transports (gRPC, HTTP) call, ModelResolver and EmbedderPort, which ModelHost and Embedder
 * implement, so handlers never import the implementations.
 */
import type { SubmitOptions } from '../batching';
import type { ImageLimits } from '../preprocess/errors';
import type { ModelInfo } from '../runtime/model';

/** What GetModelInfo reports; the runtime's own ModelInfo (a type-only import: no onnxruntime is loaded). */
export type ServedModelInfo = ModelInfo;

export interface TokenizedText {
  /** contextLength ids: SOT, tokens, EOT, zero padding. */
  ids: Int32Array;
  truncated: boolean;
  eotIndex: number;
}

export interface EmbeddingModel {
  readonly info: ServedModelInfo;
  readonly tokenizer: { tokenize(text: string, contextLength?: number): TokenizedText };
  /** The limits preprocessImage holds every image to, fixed when the model was loaded (with its
   *  decode budget); the embedder prices images by their headers against them before queueing. */
  readonly imageLimits: ImageLimits;
  /** CHW float32 pixels; rejects with ImageError for bad input. `signal` drops a decode not yet
   *  started; `owner` (the caller's key) takes turns with other owners. */
  preprocessImage(bytes: Uint8Array, opts?: { signal?: AbortSignal; owner?: string }): Promise<Float32Array>;
  /** The tokenizer's row, computed off the event loop; without it the embedder tokenizes inline. */
  tokenizeText?(text: string, contextLength: number, signal?: AbortSignal, owner?: string): Promise<TokenizedText>;
  /** ids: n × contextLength; resolves to n × embedDim raw features. */
  encodeText(ids: Int32Array, n: number): Promise<Float32Array>;
  /** pixels: n × 3 × S × S; resolves to n × embedDim raw features. */
  encodeImage(pixels: Float32Array, n: number): Promise<Float32Array>;
  warmup(): Promise<void>;
  close(): Promise<void>;
}

export interface TextEmbedding {
  /** Raw features, embedDim long. */
  vector: Float32Array;
  truncated: boolean;
  /** Tokens the model read, SOT and EOT included (at most the context length): usage reports. */
  tokens: number;
}

/** The embedding operations handlers need (implemented by inference/Embedder). */
export interface EmbedderPort {
  embedTexts(texts: readonly string[], options?: SubmitOptions): Promise<TextEmbedding>[];
  embedImages(images: readonly Uint8Array[], options?: SubmitOptions): Promise<Float32Array>[];
}

/** A version in use by one call. */
export interface ModelVersionLease {
  readonly info: ServedModelInfo;
  readonly embedder: EmbedderPort;
  release(): void;
}

/** How handlers reach a model version (implemented by inference/ModelHost). */
export interface ModelResolver {
  /** "" = the active version. Rejects with ModelNotFoundError / ModelActivationError / ModelBudgetError. */
  acquire(version: string): Promise<ModelVersionLease>;
  /** The active version first, then the other loaded ones, most recently used first. */
  loadedVersions(): { version: string; active: boolean }[];
}
