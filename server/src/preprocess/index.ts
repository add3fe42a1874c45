/**
 * OpenCLIP-exact image preprocessing for untrusted input: bytes → CHW float32 tensor, matching
 * `open_clip` eval preprocessing on `PIL.Image.open(file)` (Pillow 9.4, torchvision 0.14).
 *
 *   preprocessImage(bytes, cfg, limits?)   in-process (CPU-bound: prefer the pool in a server)
 *   new PreprocessPool({ size, cfg, limits })  worker_threads that keep the event loop free
 */
import type { PreprocessConfig } from '../model/config';
import { decodeImage } from './decode';
import { checkLimits, DEFAULT_IMAGE_LIMITS, type ImageLimits } from './errors';
import { transformImage } from './transform';

export { ImageError, DEFAULT_IMAGE_LIMITS } from './errors';
export type { ImageErrorCode, ImageLimits } from './errors';
export { PreprocessPool } from './pool';
export type { ImageJobOptions, PreprocessPoolOptions } from './pool';

/** Decodes and preprocesses one image; rejects with ImageError for bad input. */
export async function preprocessImage(
  bytes: Uint8Array,
  cfg: PreprocessConfig,
  limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
): Promise<Float32Array> {
  const img = await decodeImage(bytes, checkLimits(limits), { cfg });
  return transformImage(img, cfg);
}
