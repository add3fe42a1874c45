/**
 * Deterministic calibration inputs for the int8 converter, generated rather than shipped: images
 * drawn straight into normalised pixel tensors (gradients, flat shapes, stripes, checkerboards and
 * sensor-like noise, the range of statistics photos and icons cover) and caption-like sentences
 * from the demo corpus generator, tokenized with the bundle's own vocabulary. The same seed always
 * gives the same inputs, so a conversion is reproducible.
 */
import { demoCorpus, dressCaptions } from '../tokenizer/demo-vocab';
import type { ClipTokenizer } from '../tokenizer';
import type { PreprocessConfig } from './config';
import { Rng } from './random-init';

const CALIBRATION_SEED = 0x1817;

type Rgb = [number, number, number];

function randomColor(rng: Rng): Rgb {
  return [rng.uniform(), rng.uniform(), rng.uniform()];
}

/** Image `index` of the calibration set as a [3, size, size] tensor, normalised like preprocessing. */
export function calibrationImage(index: number, size: number, pre: PreprocessConfig): Float32Array {
  const rng = new Rng(CALIBRATION_SEED, `image-${index}`);
  const rgb = new Float32Array(3 * size * size); // planar, values in [0, 1]
  const plane = size * size;
  // Background: a linear gradient between two colours at a random angle.
  const [c0, c1] = [randomColor(rng), randomColor(rng)];
  const angle = rng.uniform() * 2 * Math.PI;
  const [dx, dy] = [Math.cos(angle), Math.sin(angle)];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const t = Math.min(1, Math.max(0, 0.5 + ((x / size - 0.5) * dx + (y / size - 0.5) * dy)));
      for (let c = 0; c < 3; c++) rgb[c * plane + y * size + x] = c0[c] + (c1[c] - c0[c]) * t;
    }
  }
  // Flat shapes: discs, rectangles, stripes and checkerboard patches.
  const shapes = 2 + Math.floor(rng.uniform() * 7);
  for (let s = 0; s < shapes; s++) {
    const color = randomColor(rng);
    const kind = Math.floor(rng.uniform() * 4);
    const cx = rng.uniform() * size;
    const cy = rng.uniform() * size;
    const r = (0.05 + rng.uniform() * 0.35) * size;
    const period = 2 + Math.floor(rng.uniform() * 14);
    for (let y = Math.max(0, Math.floor(cy - r)); y < Math.min(size, Math.ceil(cy + r)); y++) {
      for (let x = Math.max(0, Math.floor(cx - r)); x < Math.min(size, Math.ceil(cx + r)); x++) {
        let inside: boolean;
        if (kind === 0) inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
        else if (kind === 1) inside = true;
        else if (kind === 2) inside = Math.floor((x + y) / period) % 2 === 0;
        else inside = (Math.floor(x / period) + Math.floor(y / period)) % 2 === 0;
        if (!inside) continue;
        for (let c = 0; c < 3; c++) rgb[c * plane + y * size + x] = color[c];
      }
    }
  }
  const noise = rng.uniform() * 0.08;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const v = Math.min(1, Math.max(0, rgb[c * plane + i] + noise * rng.normal()));
      // Quantise to 8 bits like a decoded image, then normalise like the eval transform.
      out[c * plane + i] = (Math.round(v * 255) / 255 - pre.mean[c]) / pre.std[c];
    }
  }
  return out;
}

/** Images [from, from + n) stacked into one [n, 3, size, size] batch. */
export function calibrationImageBatch(from: number, n: number, size: number, pre: PreprocessConfig): Float32Array {
  const per = 3 * size * size;
  const out = new Float32Array(n * per);
  for (let i = 0; i < n; i++) out.set(calibrationImage(from + i, size, pre), i * per);
  return out;
}

/** The calibration captions: a slice of the demo corpus generator the bench does not use, every
 *  other one dressed like a real caption (quotes, periods, hashtags with numbers), so that the
 *  calibration also runs the tokens real captions carry beyond plain words. */
export function calibrationCaptions(count: number): string[] {
  const plain = demoCorpus(12000 + count).slice(12000);
  const dressed = dressCaptions(plain);
  return plain.map((c, i) => (i % 2 ? dressed[i] : c));
}

/** Captions [from, from + n) tokenized and cut after the batch's last EOT, as the server runs them
 *  (with the causal mask, later positions cannot change the pooled token). */
export function calibrationTextBatch(
  captions: readonly string[],
  from: number,
  n: number,
  tokenizer: ClipTokenizer,
  contextLength: number,
): { ids: BigInt64Array; dims: [number, number] } {
  const { ids, eotIndex } = tokenizer.tokenizeBatch(captions.slice(from, from + n), contextLength);
  const length = Math.max(...eotIndex) + 1;
  const out = new BigInt64Array(n * length);
  for (let r = 0; r < n; r++) for (let i = 0; i < length; i++) out[r * length + i] = BigInt(ids[r * contextLength + i]);
  return { ids: out, dims: [n, length] };
}
