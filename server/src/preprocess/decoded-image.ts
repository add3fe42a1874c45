/**
 * A decoded image as the transform reads it (Pillow's modes, interleaved samples): apart from
 * decode.ts so the PNG decoder (png-decode.ts), which decode.ts calls, can return one without
 * importing decode.ts back.
 */
import type { PilMode } from './formats';
import type { SourceRect } from './source-span';

export interface DecodedImage {
  mode: PilMode;
  width: number;
  height: number;
  /** Interleaved samples per pixel in `data`: 1 for '1'/'L'/'I', 2 for 'LA', 3 for 'RGB' and for
   *  'P' (stored palette-expanded: NEAREST resampling commutes with the palette lookup),
   *  4 for 'RGBA'/'CMYK'. '1' is stored as 0/255 like Pillow does internally. */
  channels: 1 | 2 | 3 | 4;
  /** Int32Array only for mode 'I' (16-bit greyscale opened as 32-bit integers). */
  data: Uint8Array | Int32Array;
  /** 'P' only: the palette as RGB triples, needed to pad with a palette index. */
  palette?: Uint8Array;
  /** Set when `data` holds only this rectangle of the width×height image (rows of region.width
   *  pixels): the columns and rows the transform of the cfg given to decodeImage reads. */
  region?: SourceRect;
}
