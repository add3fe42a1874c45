/** Messages between PreprocessPool and its worker threads. */
import type { PreprocessConfig } from '../model/config';
import type { AugmentSettings } from './augment';
import type { ThreadPriority } from '../util/priority';
import type { ImageErrorCode, ImageLimits } from './errors';

export interface WorkerInit {
  cfg: PreprocessConfig;
  /** The image limits every image job of this pool is held to (fixed when the pool is made). */
  limits: ImageLimits;
  /** Decode budget in seconds of every image job (libvips abandons a decode that runs longer); 0: none. */
  timeoutSeconds: number;
  /** The tokenizer's vocabulary file (text jobs); loaded on the first text job. */
  vocabPath?: string;
  /** CPU priority of the worker thread (see util/priority). */
  priority?: ThreadPriority;
}

/** A training augmentation: the settings and the seed of this row's generator. */
export interface AugmentSpec {
  settings: AugmentSettings;
  seed: number;
}

export interface ImageJobRequest {
  kind: 'image';
  id: number;
  /** A private copy of the image bytes, transferred (not cloned) to the worker. */
  bytes: Uint8Array;
  /** Training augmentation applied to the preprocessed pixels. */
  augment?: AugmentSpec;
  /** Only check that the image decodes (dataset validation): the reply's tensor is empty. */
  verifyOnly?: boolean;
}

export interface TextJobRequest {
  kind: 'text';
  id: number;
  text: string;
  contextLength: number;
}

export type JobRequest = ImageJobRequest | TextJobRequest;

export type JobReply =
  | { id: number; ok: true; tensor: Float32Array }
  | { id: number; ok: true; ids: Int32Array; truncated: boolean; eotIndex: number }
  | { id: number; ok: false; code?: ImageErrorCode; name: string; message: string };
