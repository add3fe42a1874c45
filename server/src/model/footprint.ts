/**
 * What a model version costs in memory, for the loaded-versions budget: the bytes of its bundle's
 * files (ONNX graphs with their external weights, vocabulary). onnxruntime holds the weights in
 * memory once per session, so this tracks the resident size closely, and it is known before the
 * version is loaded, so room is made before the load rather than after it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export function bundleBytes(bundleDir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(bundleDir, { withFileTypes: true })) {
    if (entry.isFile()) total += fs.statSync(path.join(bundleDir, entry.name)).size;
  }
  return total;
}
