/**
 * An int8 bundle's tower written again from its own weights (read back dequantized, which
 * re-quantize to the same integers) and its recorded layer choice, with another int8 GEMM
 * formulation: how the bench and the tests compare formulations on identical numbers without a
 * second calibration.
 */
import { readBundleStateDict } from './bundle-weights';
import type { Int8Kernel } from '../onnx/clip-graph';
import { writeTowerModel, type Tower } from '../onnx/write-model';
import type { Bundle } from './bundle';

export function rewriteInt8Tower(int8: Bundle, tower: Tower, kernel: Int8Kernel, onnxPath: string): void {
  const m = int8.manifest;
  if (!m.int8) throw new Error(`${int8.dir} is not an int8 bundle`);
  const sd = readBundleStateDict(int8);
  const activations = m.int8.method.includes('shifted') ? 'shifted-gelu' : 'symmetric';
  writeTowerModel({
    onnxPath,
    tower,
    config: m.model_cfg,
    precision: 'int8',
    producerVersion: 'int8 rewrite',
    weights: (k) => {
      const t = sd.get(k);
      if (!t) throw new Error(`int8 rewrite: ${int8.dir} has no weight ${k}`);
      return t;
    },
    int8: { layers: new Set(m.int8.towers[tower].int8_layers), activations, kernel },
  });
}
