/**
 * Typed failures for untrusted image input. Every way a client's bytes can be rejected maps to one
 * code, so the server can turn it into the right gRPC status (INVALID_ARGUMENT vs RESOURCE_EXHAUSTED)
 * without parsing messages, and the code survives the trip back from a worker thread.
 */
export type ImageErrorCode =
  'EMPTY' | 'TOO_LARGE' | 'TOO_MANY_PIXELS' | 'UNSUPPORTED_FORMAT' | 'CORRUPT' | 'DECODE_TIMEOUT' | 'OVER_BUDGET';

const CODES: ReadonlySet<string> = new Set<ImageErrorCode>([
  'EMPTY',
  'TOO_LARGE',
  'TOO_MANY_PIXELS',
  'UNSUPPORTED_FORMAT',
  'CORRUPT',
  'DECODE_TIMEOUT',
  'OVER_BUDGET',
]);

export class ImageError extends Error {
  readonly code: ImageErrorCode;

  constructor(code: ImageErrorCode, message: string) {
    super(message);
    this.name = 'ImageError';
    this.code = code;
  }

  static isCode(value: unknown): value is ImageErrorCode {
    return typeof value === 'string' && CODES.has(value);
  }
}

/** Bounds checked before any pixel is decoded. */
export interface ImageLimits {
  /** Largest accepted encoded file, in bytes. */
  maxBytes: number;
  /** Largest accepted width × height, as declared by the file header. */
  maxPixels: number;
}

/** 25 MP: every phone camera's default output and a 24 MP (6000×4000) camera frame pass; a
 *  224-pixel model gains nothing from more, and a decode costs time and memory per pixel. */
export const DEFAULT_IMAGE_LIMITS: ImageLimits = Object.freeze({
  maxBytes: 20 * 1024 * 1024,
  maxPixels: 25_000_000,
});

export function checkLimits(limits: ImageLimits): ImageLimits {
  for (const key of ['maxBytes', 'maxPixels'] as const) {
    const v = limits[key];
    if (!Number.isSafeInteger(v) || v <= 0)
      throw new RangeError(`image limit ${key} must be a positive integer, got ${v}`);
  }
  return limits;
}
