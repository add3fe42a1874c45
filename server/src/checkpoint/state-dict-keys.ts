/**
 * Turns whatever object a checkpoint holds into open_clip's plain state_dict:
 *  - a trainer checkpoint (`epoch_N.pt`) keeps the weights under the key `state_dict`;
 *  - DistributedDataParallel prefixes every key with `module.` (open_clip strips it the same way:
 *    only when the first key has it, then from all keys);
 *  - some writers store `logit_scale` as a 1-element vector instead of a 0-d tensor; open_clip's
 *    parameter is 0-d, so a single-element scalar parameter is reshaped to [].
 */
import type { StateDict } from '../model/state-dict';
import { CheckpointError } from './errors';

const DDP_PREFIX = 'module.';
/** Parameters that open_clip defines as 0-d tensors. */
const SCALAR_PARAMS = new Set(['logit_scale', 'logit_bias']);

/** Picks the weights dict out of a checkpoint's root object (a state_dict or a trainer checkpoint). */
export function findStateDictObject<T>(root: unknown, isTensor: (v: unknown) => v is T, file: string): Map<string, T> {
  if (!(root instanceof Map)) throw new CheckpointError('checkpoint does not contain a dict', file);
  const candidate =
    root.has('state_dict') && root.get('state_dict') instanceof Map
      ? (root.get('state_dict') as Map<unknown, unknown>)
      : root;
  const out = new Map<string, T>();
  const nonTensors: string[] = [];
  for (const [k, v] of candidate) {
    if (typeof k === 'string' && isTensor(v)) out.set(k, v);
    else nonTensors.push(String(k));
  }
  if (out.size === 0) {
    const keys = [...root.keys()].slice(0, 10).map(String).join(', ');
    throw new CheckpointError(
      `no tensors found: expected a state_dict, or a trainer checkpoint with a "state_dict" entry (top-level keys: ${keys})`,
      file,
    );
  }
  if (nonTensors.length) {
    throw new CheckpointError(`state_dict has non-tensor entries: ${nonTensors.slice(0, 5).join(', ')}`, file);
  }
  return out;
}

export function normalizeStateDict(sd: StateDict): StateDict {
  const first = sd.keys().next().value as string | undefined;
  const strip = first !== undefined && first.startsWith(DDP_PREFIX);
  const out: StateDict = new Map();
  for (const [key, t] of sd) {
    const name = strip && key.startsWith(DDP_PREFIX) ? key.slice(DDP_PREFIX.length) : key;
    if (out.has(name)) throw new CheckpointError(`key "${name}" occurs both with and without the "module." prefix`);
    const scalar = SCALAR_PARAMS.has(name) && t.data.length === 1 && t.shape.length === 1;
    out.set(name, scalar ? { shape: [], data: t.data } : t);
  }
  return out;
}
