/**
 * Frozen-encoder features of a dataset split, computed once per job with the base model (training
 * images augmented, seeded per row) and cached in the job directory, so a resumed job skips this.
 */
import * as fs from 'node:fs';
import type { LoadedModel } from '../../runtime/model';
import type { DatasetRow } from '../dataset';
import { FineTuneCancelledError } from '../method';
import { writeFileAtomic } from './atomic-file';
import { augmentImage, type AugmentSettings } from './augment';
import { seededRandom } from './math';
import type { FeatureSet } from './train-loop';

export class FeatureError extends Error {
  constructor(message: string, readonly rows: number[] = []) {
    super(message);
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
  const d = model.info.embedDim;
  const ctxLen = model.info.contextLength;
  const per = 3 * model.info.imageSize * model.info.imageSize;
  const bs = o.batchSize ?? 32;
  const image = new Float32Array(rows.length * d);
  const text = new Float32Array(rows.length * d);
  for (let start = 0; start < rows.length; start += bs) {
    if (o.signal.aborted) throw new FineTuneCancelledError();
    const batch = rows.slice(start, start + bs);
    const pixels = new Float32Array(batch.length * per);
    await Promise.all(
      batch.map(async (r, i) => {
        try {
          let bytes: Uint8Array = await fs.promises.readFile(r.image);
          // Per-row generator: the augmentation of a row does not depend on batch order.
          if (o.augment) bytes = await augmentImage(bytes, o.augment, seededRandom((o.seed * 1000003 + r.row) >>> 0));
          pixels.set(await model.preprocessImage(bytes), i * per);
        } catch (err) {
          throw new FeatureError(`row ${r.row}: cannot use image: ${(err as Error).message}`, [r.row]);
        }
      }),
    );
    const ids = model.tokenizer.tokenizeBatch(batch.map((r) => r.caption), ctxLen).ids;
    const [img, txt] = await Promise.all([model.encodeImage(pixels, batch.length), model.encodeText(ids, batch.length)]);
    image.set(img, start * d);
    text.set(txt, start * d);
    o.onProgress?.(start + batch.length, rows.length);
  }
  return { n: rows.length, image, text };
}

const MAGIC = 'clipserve-features-1';

/** Atomic write of both splits' features. */
export function saveFeatures(file: string, key: string, d: number, train: FeatureSet, validation: FeatureSet): void {
  const header = Buffer.from(JSON.stringify({ magic: MAGIC, key, d, nTrain: train.n, nVal: validation.n }).padEnd(1020, ' '));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  writeFileAtomic(file, [len, header, train.image, train.text, validation.image, validation.text]);
}

/** The cached features when they exist and were computed for the same `key` (dataset split + settings). */
export function loadFeatures(file: string, key: string, d: number): { train: FeatureSet; validation: FeatureSet } | undefined {
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
