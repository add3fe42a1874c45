/**
 * open_clip_train's training augmentations that the model card uses, on the decoded image before
 * preprocessing: torchvision ColorJitter(brightness, contrast, saturation, hue) with probability
 * color_jitter_prob (its four adjustments in a random order, factors drawn uniformly), then
 * RandomGrayscale(grayscale_prob) (ITU-R 601-2 luma into all three channels). Driven by a seeded
 * generator so that the same job computes the same training embeddings on every run.
 *
 * As in open_clip_train (RandomResizedCrop, then the colour augmentations, then ToTensor), the
 * augmentations apply to the resized, cropped 8-bit image: here the model's eval preprocessing
 * output, brought back to 0..255 and normalised again. Nothing is re-encoded, and the work is per
 * output pixel, not per pixel of a 12 MP photo. It runs in the preprocessing worker threads.
 */
import type { PreprocessConfig } from '../model/config';

export interface AugmentSettings {
  colorJitter: [number, number, number, number];
  colorJitterProb: number;
  grayscaleProb: number;
}

export function augmentationEnabled(a: AugmentSettings): boolean {
  return (a.colorJitterProb > 0 && a.colorJitter.some((v) => v > 0)) || a.grayscaleProb > 0;
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);
const luma = (r: number, g: number, b: number): number => 0.299 * r + 0.587 * g + 0.114 * b;

function blend(px: Float32Array, factor: number, other: (i: number) => number): void {
  for (let i = 0; i < px.length; i++) px[i] = clamp255(factor * px[i] + (1 - factor) * other(i));
}

function grayOf(px: Float32Array): Float32Array {
  const g = new Float32Array(px.length / 3);
  for (let p = 0; p < g.length; p++) g[p] = luma(px[3 * p], px[3 * p + 1], px[3 * p + 2]);
  return g;
}

/** torchvision adjust_hue: rotate the hue by `shift` (a fraction of the circle) in HSV. */
function shiftHue(px: Float32Array, shift: number): void {
  for (let p = 0; p < px.length; p += 3) {
    const r = px[p] / 255;
    const g = px[p + 1] / 255;
    const b = px[p + 2] / 255;
    const max = Math.max(r, g, b);
    const min = Math.min(r, g, b);
    const c = max - min;
    let h = 0;
    if (c > 0) {
      if (max === r) h = ((g - b) / c) % 6;
      else if (max === g) h = (b - r) / c + 2;
      else h = (r - g) / c + 4;
      h /= 6;
    }
    h = (((h + shift) % 1) + 1) % 1;
    const s = max === 0 ? 0 : c / max;
    const v = max;
    const i = Math.floor(h * 6);
    const f = h * 6 - i;
    const P = v * (1 - s);
    const Q = v * (1 - s * f);
    const T = v * (1 - s * (1 - f));
    const [R, G, B] = [
      [v, T, P],
      [Q, v, P],
      [P, v, T],
      [P, Q, v],
      [T, P, v],
      [v, P, Q],
    ][i % 6];
    px[p] = R * 255;
    px[p + 1] = G * 255;
    px[p + 2] = B * 255;
  }
}

/** Applies the augmentations to interleaved RGB pixels (0..255) in place. */
export function augmentPixels(px: Float32Array, a: AugmentSettings, rand: () => number): void {
  if (rand() < a.colorJitterProb) {
    const [bri, con, sat, hue] = a.colorJitter;
    const factor = (v: number) => 1 - v + rand() * 2 * v;
    const ops: (() => void)[] = [];
    if (bri > 0) {
      const f = Math.max(0, factor(bri));
      ops.push(() => blend(px, f, () => 0));
    }
    if (con > 0) {
      const f = Math.max(0, factor(con));
      ops.push(() => {
        const g = grayOf(px);
        let mean = 0;
        for (const v of g) mean += v;
        mean /= g.length;
        blend(px, f, () => mean);
      });
    }
    if (sat > 0) {
      const f = Math.max(0, factor(sat));
      ops.push(() => {
        const g = grayOf(px);
        blend(px, f, (i) => g[Math.floor(i / 3)]);
      });
    }
    if (hue > 0) {
      const shift = -hue + rand() * 2 * hue;
      ops.push(() => shiftHue(px, shift));
    }
    // torchvision applies the four in a random permutation.
    for (let i = ops.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [ops[i], ops[j]] = [ops[j], ops[i]];
    }
    for (const op of ops) op();
  }
  if (rand() < a.grayscaleProb) {
    for (let p = 0; p < px.length; p += 3) {
      const l = luma(px[p], px[p + 1], px[p + 2]);
      px[p] = px[p + 1] = px[p + 2] = l;
    }
  }
}

/**
 * Augments a preprocessed CHW tensor (normalised with cfg.mean/std): its 8-bit RGB values are
 * recovered, augmented and rounded like the 8-bit image torchvision's ToTensor would read, then
 * normalised again. Returns the input unchanged when no augmentation fired.
 */
export function augmentTensor(
  tensor: Float32Array,
  cfg: Pick<PreprocessConfig, 'mean' | 'std'>,
  a: AugmentSettings,
  rand: () => number,
): Float32Array {
  if (!augmentationEnabled(a)) return tensor;
  const plane = tensor.length / 3;
  const px = new Float32Array(tensor.length);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++)
      px[3 * p + c] = Math.round(clamp255((tensor[c * plane + p] * cfg.std[c] + cfg.mean[c]) * 255));
  }
  const before = px.slice();
  augmentPixels(px, a, rand);
  let changed = false;
  const out = new Float32Array(tensor.length);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      const v = Math.round(clamp255(px[3 * p + c]));
      if (v !== before[3 * p + c]) changed = true;
      out[c * plane + p] = (v / 255 - cfg.mean[c]) / cfg.std[c];
    }
  }
  return changed ? out : tensor;
}
