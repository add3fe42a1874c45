/** Messages between PreprocessPool and its worker threads. */
import type { PreprocessConfig } from '../model/config';
import type { ImageErrorCode, ImageLimits } from './errors';

export interface WorkerInit {
  cfg: PreprocessConfig;
  limits: ImageLimits;
}

export interface JobRequest {
  id: number;
  /** A private copy of the image bytes, transferred (not cloned) to the worker. */
  bytes: Uint8Array;
}

export type JobReply =
  | { id: number; ok: true; tensor: Float32Array }
  | { id: number; ok: false; code?: ImageErrorCode; name: string; message: string };
