/**
 * Checks a freshly read checkpoint against its config (the layout comes from
 * model/expected-weights, shared with the graph builder), so a wrong config or a truncated
 * checkpoint fails at load time with the file named, not deep inside conversion.
 */
import type { OpenClipConfig } from '../model/config';
import { expectedWeightShapes, validateStateDict, WeightsError } from '../model/expected-weights';
import type { StateDict } from '../model/state-dict';
import { CheckpointError } from './errors';

export function expectedStateDictShapes(config: OpenClipConfig): Map<string, number[]> {
  return expectedWeightShapes(config.model_cfg);
}

/** Throws a CheckpointError naming every missing or mis-shaped tensor; returns the keys the
 *  model does not use (e.g. buffers of other open_clip variants), which callers may report. */
export function checkStateDictMatchesConfig(config: OpenClipConfig, sd: StateDict, file?: string): string[] {
  try {
    validateStateDict(sd, config.model_cfg);
  } catch (e) {
    if (e instanceof WeightsError)
      throw new CheckpointError(`checkpoint does not match open_clip_config.json: ${e.message}`, file);
    throw e;
  }
  const expected = expectedWeightShapes(config.model_cfg);
  return [...sd.keys()].filter((k) => !expected.has(k));
}
