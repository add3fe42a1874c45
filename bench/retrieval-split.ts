/**
 * The held-out split of the extended icon set that the int8 retrieval figures use
 * (bench/int8-accuracy.ts trains on it, bench/int8-retrieval-towers.ts evaluates the kept bundles
 * on it): a seeded shuffle, the first HELD_OUT_TRAIN pairs fine-tuned on, the rest evaluated.
 */
import { seededRandom } from '../server/src/util/random';

/** Pairs of the extended icon set that the held-out retrieval model is fine-tuned on. */
export const HELD_OUT_TRAIN = 300;

export function heldOutSplit<T>(all: readonly T[]): { train: T[]; evaluated: T[] } {
  const order = all.map((_, i) => i);
  const rand = seededRandom(17);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return {
    train: order.slice(0, HELD_OUT_TRAIN).map((i) => all[i]),
    evaluated: order.slice(HELD_OUT_TRAIN).map((i) => all[i]),
  };
}
