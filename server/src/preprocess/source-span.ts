/**
 * The crop geometry of the eval transform and the source rectangle its resize reads: apart from
 * transform.ts so the decoder (decode.ts) can cut a decoded image to what the transform will read
 * without importing the transform that imports it.
 */
import type { PreprocessConfig } from '../model/config';
import { axisCoefficients, rowSpan, type Window } from './resample';
import { resizedSize, roundHalfEven } from './resize-size';

/** Largest resized side the transform accepts (a bound against absurd aspect ratios). */
export const MAX_RESIZED_SIDE = 1 << 24;

/** One axis of CenterCrop / CenterCropOrPad: which resized indices survive and where they land. */
export interface AxisPlacement {
  /** First kept index in the resized image. */
  src: number;
  /** Number of kept indices. */
  count: number;
  /** Offset of the kept run in the size×size output (padding before it). */
  dst: number;
}

export function placeAxis(n: number, size: number): AxisPlacement {
  if (n < size) return { src: 0, count: n, dst: (size - n) >> 1 };
  return { src: roundHalfEven((n - size) / 2), count: size, dst: 0 };
}

/** A rectangle of the source image, in source pixels. */
export interface SourceRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The resized window the transform computes (the crop; all of it when padding). */
export function cropWindow(outW: number, outH: number, size: number): Window {
  const px = placeAxis(outW, size);
  const py = placeAxis(outH, size);
  return { x0: px.src, y0: py.src, w: px.count, h: py.count };
}

/** Source columns or rows one axis of the separable resize reads for the window's [first,
 *  first + count): the taps' span, or the window itself where that axis is not resized. */
function axisSpan(
  inSize: number,
  outSize: number,
  first: number,
  count: number,
  filter: PreprocessConfig['interpolation'],
): [number, number] {
  if (inSize === outSize) return [first, first + count];
  return rowSpan(axisCoefficients(inSize, outSize, filter, first, count));
}

/**
 * The part of a w×h source that the bicubic/bilinear transform of `cfg` reads: what a decoder may
 * cut the image to before handing it over (see DecodedImage.region). Undefined when that is the
 * whole image, or when the image is not resized at all (the crop alone reads it then).
 */
export function sourceSpan(
  w: number,
  h: number,
  cfg: Pick<PreprocessConfig, 'size' | 'resize_mode' | 'interpolation'>,
): SourceRect | undefined {
  const [outW, outH] = resizedSize(w, h, cfg);
  if ((outW === w && outH === h) || outW < 1 || outH < 1 || outW > MAX_RESIZED_SIDE || outH > MAX_RESIZED_SIDE)
    return undefined;
  const win = cropWindow(outW, outH, cfg.size);
  const [x0, x1] = axisSpan(w, outW, win.x0, win.w, cfg.interpolation);
  const [y0, y1] = axisSpan(h, outH, win.y0, win.h, cfg.interpolation);
  if (x0 === 0 && y0 === 0 && x1 === w && y1 === h) return undefined;
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}
