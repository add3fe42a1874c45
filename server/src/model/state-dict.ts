/**
 * A checkpoint's weights as the graph builder consumes them: open_clip's state_dict key names
 * (no `module.` prefix), each an fp32 tensor in C order. Readers convert fp16/bf16 on load so the
 * builder sees one dtype and decides itself what to store.
 */
export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

export type StateDict = Map<string, WeightTensor>;

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
