/**
 * Frozen-encoder features of a dataset split, computed once per job with the base model (training
 * images augmented, seeded per row) and cached in the job directory, so a resumed job skips this.
 *
 * None of it runs on the event loop: images are read asynchronously, decoded (with the limits the
 * model was loaded with: the serving decoder's), preprocessed and augmented in the model's worker pool, captions tokenized
 * there too, and only a few images are in memory at once (IMAGES_IN_FLIGHT).
 */
import { setMaxListeners } from 'node:events';
import * as fs from 'node:fs';
import { encodeInBatches } from '../../inference/batch-encode';
import type { LoadedModel } from '../../runtime/model';
import type { DatasetRow } from '../dataset';
import { FineTuneCancelledError, FineTuneDataError } from '../method';
import { writeFileAtomic } from './atomic-file';
import type { AugmentSettings } from '../../preprocess/augment';
import type { FeatureSet } from './train-loop';

/** Encoded images read and waiting for (or in) the decode pool at once: bounds the job's memory. */
const IMAGES_IN_FLIGHT = 2;

export class FeatureError extends FineTuneDataError {
  constructor(message: string, rows: number[] = []) {
    super(message, rows);
    this.name = 'FeatureError';
  }
}

export interface FeatureOptions {
  augment?: AugmentSettings;
  seed: number;
  batchSize?: number;
  signal: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export async function computeFeatures(model: LoadedModel, rows: DatasetRow[], o: FeatureOptions): Promise<FeatureSet> {
  // One pool job per image and caption listens for cancellation: a batch's worth of listeners.
  const jobs = new AbortController();
  setMaxListeners(0, jobs.signal);
  const stop = () => jobs.abort();
  o.signal.addEventListener('abort', stop, { once: true });
  try {
    return await extract(model, rows, { ...o, signal: jobs.signal });
  } finally {
    o.signal.removeEventListener('abort', stop);
  }
}

async function extract(model: LoadedModel, rows: DatasetRow[], o: FeatureOptions): Promise<FeatureSet> {
  const { signal } = o;
  const { image, text } = await encodeInBatches(model, rows, {
    batchSize: o.batchSize ?? 32,
    imagesInFlight: IMAGES_IN_FLIGHT,
    signal,
    beforeBatch: () => {
      if (signal.aborted) throw new FineTuneCancelledError();
    },
    image: async (r) => {
      try {
        const bytes = await fs.promises.readFile(r.image);
        // Per-row generator: the augmentation of a row does not depend on batch order.
        const augment = o.augment ? { settings: o.augment, seed: (o.seed * 1000003 + r.row) >>> 0 } : undefined;
        return await model.preprocessImage(bytes, { augment, signal });
      } catch (err) {
        if (signal.aborted) throw new FineTuneCancelledError();
        throw new FeatureError(`row ${r.row}: cannot use image: ${(err as Error).message}`, [r.row]);
      }
    },
    text: (r) => r.caption,
    onProgress: o.onProgress,
  });
  return { n: rows.length, image, text };
}

const MAGIC = 'clipserve-features-2';

/** Atomic write of both splits' features. */
export function saveFeatures(file: string, key: string, d: number, train: FeatureSet, validation: FeatureSet): void {
  const header = Buffer.from(
    JSON.stringify({ magic: MAGIC, key, d, nTrain: train.n, nVal: validation.n }).padEnd(1020, ' '),
  );
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  writeFileAtomic(file, [len, header, train.image, train.text, validation.image, validation.text]);
}

/** The cached features when they exist and were computed for the same `key` (dataset split + settings). */
export function loadFeatures(
  file: string,
  key: string,
  d: number,
): { train: FeatureSet; validation: FeatureSet } | undefined {
  if (!fs.existsSync(file)) return undefined;
  const buf = fs.readFileSync(file);
  const hlen = buf.readUInt32LE(0);
  let h: { magic: string; key: string; d: number; nTrain: number; nVal: number };
  try {
    h = JSON.parse(buf.subarray(4, 4 + hlen).toString('utf8'));
  } catch {
    return undefined;
  }
  if (h.magic !== MAGIC || h.key !== key || h.d !== d) return undefined;
  if (buf.length !== 4 + hlen + 2 * (h.nTrain + h.nVal) * d * 4) return undefined;
  let off = 4 + hlen;
  const next = (n: number): Float32Array => {
    const a = new Float32Array(n * d);
    new Uint8Array(a.buffer).set(buf.subarray(off, off + n * d * 4));
    off += n * d * 4;
    return a;
  };
  const train = { n: h.nTrain, image: next(h.nTrain), text: next(h.nTrain) };
  const validation = { n: h.nVal, image: next(h.nVal), text: next(h.nVal) };
  return { train, validation };
}
