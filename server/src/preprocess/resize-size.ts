/**
 * The resize step's geometry (torchvision's and open_clip's output sizes, Python's rounding):
 * apart from transform.ts so the decoder (decode.ts) can size its shrink-on-load without
 * importing the transform that imports it.
 */
import type { PreprocessConfig } from '../model/config';

/** Python's round() on a float: half to even. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The size the resize step produces, [width, height]. */
export function resizedSize(
  w: number,
  h: number,
  cfg: Pick<PreprocessConfig, 'size' | 'resize_mode'>,
): [number, number] {
  const size = cfg.size;
  switch (cfg.resize_mode) {
    case 'shortest': {
      // torchvision _compute_resized_output_size: int(size * long / short) in float64.
      const short = Math.min(w, h);
      const long = Math.max(w, h);
      const newLong = Math.trunc((size * long) / short);
      return w <= h ? [size, newLong] : [newLong, size];
    }
    case 'squash':
      return [size, size];
    case 'longest': {
      // open_clip ResizeKeepRatio.get_params with longest=1: ratio = max(h/size, w/size).
      const ratio = Math.max(h / size, w / size) * 1 + Math.min(h / size, w / size) * (1 - 1);
      return [roundHalfEven(w / ratio), roundHalfEven(h / ratio)];
    }
    default:
      throw new Error(`unknown resize_mode ${String((cfg as { resize_mode: unknown }).resize_mode)}`);
  }
}
