/**
 * `--provider cuda` without onnxruntime's CUDA provider library (not on the npm registry, skipped at
 * npm install) fails up front with how to install it, instead of onnxruntime's "Failed to load
 * shared library". On a machine where the library is installed, CUDA is simply a candidate.
 */
import { cudaAvailable, providerCandidates, RuntimeError } from '../../../server/src/runtime/model';

test('--provider cuda explains how to install the CUDA provider library when it is missing', () => {
  if (cudaAvailable()) {
    expect(providerCandidates('cuda')).toEqual(['cuda']);
    expect(providerCandidates('auto')).toEqual(['cuda', 'cpu']);
    return;
  }
  expect(() => providerCandidates('cuda')).toThrow(RuntimeError);
  expect(() => providerCandidates('cuda')).toThrow(
    /^--provider cuda: .*(ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install\.js|linux\/x64 only).*--provider cpu$/,
  );
  expect(providerCandidates('auto')).toEqual(['cpu']);
});
