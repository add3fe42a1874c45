/**
 * The held-out split of the extended icon set that the int8 retrieval figures use
 * (bench/int8-retrieval.ts trains on it, bench/int8-retrieval-towers.ts evaluates the kept bundles
 * on it): a seeded shuffle cut into folds of HELD_OUT_TRAIN pairs; fold f is fine-tuned on, the
 * rest evaluated (fold 0: the first HELD_OUT_TRAIN pairs of the shuffle, as before folds existed).
 */
import { seededRandom } from '../server/src/util/random';

/** Pairs of the extended icon set that the held-out retrieval model is fine-tuned on. */
export const HELD_OUT_TRAIN = 300;

export function heldOutSplit<T>(all: readonly T[], fold = 0): { train: T[]; evaluated: T[] } {
  const from = fold * HELD_OUT_TRAIN;
  if (!Number.isInteger(fold) || fold < 0 || from + HELD_OUT_TRAIN > all.length)
    throw new RangeError(`fold ${fold} does not fit ${all.length} pairs in folds of ${HELD_OUT_TRAIN}`);
  const order = all.map((_, i) => i);
  const rand = seededRandom(17);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return {
    train: order.slice(from, from + HELD_OUT_TRAIN).map((i) => all[i]),
    evaluated: [...order.slice(0, from), ...order.slice(from + HELD_OUT_TRAIN)].map((i) => all[i]),
  };
}
