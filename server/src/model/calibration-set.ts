/**
 * What the int8 converter calibrates and checks on. Generated inputs (./calibration-inputs) need
 * nothing from the user, but they are not what a model serves: on an adapter-fine-tuned icon model
 * the held-out icons drifted 3–6× more under int8 than the generated images (docs/int8.md), so a
 * check on generated inputs passed layers that changed the answers. When the served data is at
 * hand — `--calibration-data <csv>`, or a fine-tune job's own pairs — the converter runs on a
 * seeded sample of it instead, preprocessed exactly as serving preprocesses it.
 */
import * as fs from 'node:fs';
import type { ImageCaptionPair } from '../dataset/csv';
import { preprocessImage } from '../preprocess';
import { seededRandom } from '../util/random';
import { calibrationCaptions, calibrationImageBatch } from './calibration-inputs';
import type { PreprocessConfig } from './config';
import { BundleError } from './errors';

export interface CalibrationSet {
  /** What the manifest records as the calibration's origin. */
  readonly source: string;
  /** Captions, one per image: the set has `captions.length` samples. */
  readonly captions: readonly string[];
  /** Images [from, from + n) as one normalised [n, 3, size, size] batch. */
  images(from: number, n: number): Promise<Float32Array>;
}

/** Image–caption pairs to calibrate on, and a description of where they came from. */
export interface CalibrationData {
  pairs: readonly ImageCaptionPair[];
  source: string;
}

export const GENERATED_SOURCE = 'clipserve calibration-inputs (deterministic)';

export function generatedCalibrationSet(samples: number, pre: PreprocessConfig): CalibrationSet {
  return {
    source: GENERATED_SOURCE,
    captions: calibrationCaptions(samples),
    images: (from, n) => Promise.resolve(calibrationImageBatch(from, n, pre.size, pre)),
  };
}

/** Up to `samples` of `data`'s pairs, chosen by a seeded shuffle (all of them when there are no
 *  more), so that a conversion is reproducible. */
export function pairsCalibrationSet(data: CalibrationData, samples: number, pre: PreprocessConfig): CalibrationSet {
  if (data.pairs.length === 0) throw new BundleError('int8 calibration data holds no image–caption pairs');
  const order = data.pairs.map((_, i) => i);
  const rand = seededRandom(0x1817);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const chosen = order.slice(0, Math.min(samples, order.length)).map((i) => data.pairs[i]);
  const per = 3 * pre.size * pre.size;
  return {
    source: `${data.source} (${chosen.length} of ${data.pairs.length} pairs)`,
    captions: chosen.map((p) => p.caption),
    async images(from, n) {
      const out = new Float32Array(n * per);
      for (let i = 0; i < n; i++) {
        const { image } = chosen[from + i];
        try {
          out.set(await preprocessImage(await fs.promises.readFile(image), pre), i * per);
        } catch (err) {
          throw new BundleError(`int8 calibration image: ${(err as Error).message}`, image);
        }
      }
      return out;
    },
  };
}
