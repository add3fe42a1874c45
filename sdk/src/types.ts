/** Public result and option types of the client. */

/** An encoded image (JPEG, PNG, WebP, …) as bytes, or the path of an image file to read. */
export type ImageInput = Buffer | Uint8Array | string;

/** One item of a mixed batch: a plain string is a text; an image goes in `{ image }`. */
export type EmbedItem = string | { text: string } | { image: ImageInput };

export type Modality = 'text' | 'image';

export interface CallOptions {
  /** Give up after this many milliseconds (for batch helpers: for the whole operation). */
  timeoutMs?: number;
  /** Give up at this instant. The earlier of `deadline` and `timeoutMs` wins. */
  deadline?: Date;
  /** Cancels the call; the promise rejects with a ClipServeError of code CANCELLED. */
  signal?: AbortSignal;
}

export interface EmbedProgress {
  /** Items embedded so far. */
  completed: number;
  total: number;
  /** The model version that produced them (one version per operation, see EmbedOptions.modelVersion). */
  modelVersion: string;
}

/** The model version an embedding call runs on. */
export interface VersionOptions {
  /**
   * Pin this call to a model version (overrides the client's `modelVersion`); "" or unset: the
   * client's pin, else the server's active version. Any version the server knows is served (it
   * loads it on demand), so an index built with version N is queried with N while N+1 is active.
   * The batch helpers run a whole operation on one version: when unpinned, the first answer's
   * version pins the rest, and a request answered by another version (an activation in between)
   * is sent again pinned.
   */
  modelVersion?: string;
}

export interface EmbedOptions extends CallOptions, VersionOptions {
  /** Return the model's raw projections instead of L2-normalized vectors. */
  raw?: boolean;
  /** Items per request; default: the server's advertised limit (GetModelInfo), else the client's. */
  maxItemsPerRequest?: number;
  /** Requests in flight at once. Default: the client's `concurrency`. */
  concurrency?: number;
  /** Called after each request completes. */
  onProgress?: (progress: EmbedProgress) => void;
}

export interface StreamItem {
  /** Echoed on the result; defaults to the item's 0-based position in the source, as a string. */
  id?: string;
  text?: string;
  image?: ImageInput;
}

export type StreamResult =
  | { id: string; modality: Modality; embedding: Float32Array; truncated: boolean; error?: undefined }
  | { id: string; modality: Modality | undefined; embedding?: undefined; error: import('./errors.js').ClipServeError };

export interface StreamOptions extends CallOptions, VersionOptions {
  raw?: boolean;
  /** Items sent but not yet answered, at most. Bounds memory on both sides. Default 64. */
  maxInFlight?: number;
}

export interface SimilarityResult {
  /** images × texts: logit_scale · cosine. */
  logitsPerImage: number[][];
  /** texts × images. */
  logitsPerText: number[][];
  /** images × texts: softmax over the texts of each row. */
  probs: number[][];
  textTruncated: boolean[];
  logitScale: number;
  modelVersion: string;
}

export type RankQuery = { text: string } | { image: ImageInput };

export interface RankCandidates {
  texts?: string[];
  images?: ImageInput[];
}

export interface RankedCandidate {
  /** Which candidate list the candidate came from, and its index there. */
  modality: Modality;
  index: number;
  /** Cosine similarity with the query. */
  score: number;
  logit: number;
  /** Softmax over all candidates. */
  probability: number;
}

export interface RankOptions extends CallOptions, VersionOptions {
  /** Only the best k; 0 or omitted: all. */
  topK?: number;
}

export interface LabelScore {
  label: string;
  /** Index in the labels passed to classify(). */
  index: number;
  probability: number;
  logit: number;
}

export interface ClassifyOptions extends CallOptions, VersionOptions {
  /** Prompt templates with one "{}"; the server's default is ["a photo of a {}."]. */
  templates?: string[];
  topK?: number;
}

export interface ServerLimits {
  maxItemsPerRequest: number;
  maxImageBytes: number;
  maxImagePixels: number;
  maxMessageBytes: number;
  maxBatchSize: number;
  /** Longest text accepted, in UTF-16 code units (0: not advertised). */
  maxTextChars: number;
}

export interface ModelInfo {
  name: string;
  version: string;
  embedDim: number;
  imageSize: number;
  contextLength: number;
  logitScale: number;
  provider: string;
  demo: boolean;
  precision: string;
  limits: ServerLimits;
  /** The version unpinned calls get now. */
  activeVersion: string;
  /** The versions the server has in memory (active first, then most recently used). */
  loadedVersions: string[];
}

export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';
