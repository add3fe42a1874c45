/**
 * Reads a bundle's weights back into an OpenCLIP state dict from its ONNX towers (inline raw data
 * and external data files), so a fine-tuned version can always be written from its base bundle,
 * even when the checkpoint it was converted from is gone. The graph builder names every weight
 * initializer by its state-dict key, with a `.T` suffix for Linear weights it stores transposed;
 * fp16 bundles store float16 (read back to float32: exactly the values the bundle serves). int8
 * bundles store their int8 projections as values + per-column scales (./onnx/quantize), read back
 * dequantized: the weights the int8 graph multiplies by, which a new version then re-quantizes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Bundle } from './bundle';
import { BundleError } from './errors';
import { expectedWeightShapes, validateStateDict } from './expected-weights';
import type { StateDict } from './state-dict';
import { int8WeightNames, projectionWeight, quantizableLayers } from '../onnx/clip-graph';
import { halfBitsToFloat } from '../onnx/fp16';
import { dequantizePerColumn } from '../onnx/quantize';
import { DataType, decodeModel, type TensorMsg } from '../onnx/proto';

function readTensorBytes(t: TensorMsg, onnxFile: string, byteLength: number): Uint8Array {
  if (t.dataLocation !== 1) {
    if (!t.rawData || t.rawData.byteLength !== byteLength)
      throw new BundleError(
        `initializer ${t.name} has ${t.rawData?.byteLength ?? 0} raw bytes, expected ${byteLength}`,
        onnxFile,
      );
    return t.rawData;
  }
  const ext = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
  if (!ext.location || ext.location.includes('/') || ext.location.includes('\\'))
    throw new BundleError(
      `initializer ${t.name} has a bad external location ${JSON.stringify(ext.location)}`,
      onnxFile,
    );
  const offset = Number(ext.offset ?? 0);
  const length = Number(ext.length ?? byteLength);
  if (length !== byteLength)
    throw new BundleError(`initializer ${t.name} has ${length} external bytes, expected ${byteLength}`, onnxFile);
  const dataFile = path.join(path.dirname(onnxFile), ext.location);
  const fd = fs.openSync(dataFile, 'r');
  try {
    const out = new Uint8Array(byteLength);
    let done = 0;
    while (done < byteLength) {
      const n = fs.readSync(fd, out, done, byteLength - done, offset + done);
      if (n === 0)
        throw new BundleError(
          `external data ends before initializer ${t.name} (offset ${offset}, ${byteLength} bytes)`,
          dataFile,
        );
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

function toFloat32(t: TensorMsg, bytes: Uint8Array, count: number): Float32Array {
  if (t.dataType === DataType.FLOAT) {
    const out = new Float32Array(count);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  if (t.dataType === DataType.FLOAT16) {
    const half = new Uint16Array(count);
    new Uint8Array(half.buffer).set(bytes);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = halfBitsToFloat(half[i]);
    return out;
  }
  throw new BundleError(`initializer ${t.name} has data type ${t.dataType}, expected float32 or float16`);
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** Dequantizes the int8 projections of `tower` (none in fp32/fp16 bundles) into `sd`. */
function readInt8Projections(
  bundle: Bundle,
  tower: 'visual' | 'textual',
  onnxFile: string,
  inits: TensorMsg[],
  expected: Map<string, number[]>,
  sd: StateDict,
): void {
  const byName = new Map(inits.map((t) => [t.name, t]));
  for (const layer of quantizableLayers(bundle.manifest.model_cfg, tower)) {
    const names = int8WeightNames(layer);
    const values = byName.get(names.values);
    const scales = byName.get(names.scales);
    if (!values && !scales) continue;
    const { key, transposed } = projectionWeight(layer);
    const shape = expected.get(key)!;
    const [rows, cols] = transposed ? [shape[1], shape[0]] : shape;
    if (!values || !scales || values.dataType !== DataType.INT8 || scales.dataType !== DataType.FLOAT) {
      throw new BundleError(
        `int8 projection ${layer} needs int8 ${names.values} and float32 ${names.scales}`,
        onnxFile,
      );
    }
    const q = new Int8Array(rows * cols);
    new Uint8Array(q.buffer).set(readTensorBytes(values, onnxFile, rows * cols));
    const s = toFloat32(scales, readTensorBytes(scales, onnxFile, cols * 4), cols);
    const w = dequantizePerColumn({ values: q, scales: s }, rows, cols);
    sd.set(key, { shape: [...shape], data: transposed ? transpose(w, rows, cols) : w });
  }
}

/** The full OpenCLIP state dict of a (verified) bundle. */
export function readBundleStateDict(bundle: Bundle): StateDict {
  const cfg = bundle.manifest.model_cfg;
  const expected = expectedWeightShapes(cfg);
  const sd: StateDict = new Map();
  for (const [tower, onnxFile] of [
    ['visual', bundle.paths.visual],
    ['textual', bundle.paths.textual],
  ] as const) {
    const model = decodeModel(fs.readFileSync(onnxFile));
    const inits = model.graph?.initializer ?? [];
    readInt8Projections(bundle, tower, onnxFile, inits, expected, sd);
    for (const t of inits) {
      const transposed = t.name.endsWith('.T') && expected.has(t.name.slice(0, -2));
      const key = transposed ? t.name.slice(0, -2) : t.name;
      const shape = expected.get(key);
      if (!shape) continue; // graph constants (shapes, masks, scales)
      const dims = (t.dims ?? []).map(Number);
      const count = shape.reduce((a, b) => a * b, 1);
      const bytesPer = t.dataType === DataType.FLOAT16 ? 2 : 4;
      let data = toFloat32(t, readTensorBytes(t, onnxFile, count * bytesPer), count);
      if (transposed) {
        if (dims.length !== 2 || dims[0] !== shape[1] || dims[1] !== shape[0])
          throw new BundleError(
            `initializer ${t.name} has shape [${dims}], expected [${shape[1]}, ${shape[0]}]`,
            onnxFile,
          );
        data = transpose(data, dims[0], dims[1]);
      }
      sd.set(key, { shape: [...shape], data });
    }
  }
  sd.set('logit_scale', {
    shape: [...(expected.get('logit_scale') ?? [])],
    data: Float32Array.of(bundle.manifest.logit_scale),
  });
  try {
    validateStateDict(sd, cfg);
  } catch (err) {
    throw new BundleError(`cannot read the weights back: ${(err as Error).message}`, bundle.dir);
  }
  return sd;
}
