/**
 * Reads an ONNX file's signature (graph inputs/outputs with element types and shapes) and the
 * external data files its initializers point to, without onnxruntime: this is what bundle
 * verification checks against the manifest before any session is created.
 */
import * as fs from 'node:fs';
import { DATA_TYPE_NAMES, decodeModel, type ValueInfo } from './proto';

export interface TensorSpec {
  name: string;
  dtype: string;
  /** Fixed sizes as numbers, symbolic (dynamic) axes as their names. */
  shape: (number | string)[];
}

export interface OnnxSignature {
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  externalLocations: string[];
  opsets: Record<string, number>;
}

function spec(v: ValueInfo): TensorSpec {
  const t = v.type?.tensorType;
  const dims = t?.shape?.dim ?? [];
  return {
    name: v.name,
    dtype: DATA_TYPE_NAMES[t?.elemType ?? 0] ?? `type${t?.elemType}`,
    shape: dims.map((d) => (d.dimValue !== undefined ? Number(d.dimValue) : (d.dimParam ?? '?'))),
  };
}

/** Throws (with the protobuf decoder's message) when the file is not a decodable ONNX model. */
export function readOnnxSignature(file: string): OnnxSignature {
  const model = decodeModel(fs.readFileSync(file));
  const g = model.graph;
  if (!g) throw new Error('the file holds no ONNX graph');
  const initNames = new Set((g.initializer ?? []).map((t) => t.name));
  const locations = new Set<string>();
  for (const t of g.initializer ?? []) {
    for (const e of t.externalData ?? []) if (e.key === 'location') locations.add(e.value);
  }
  const opsets: Record<string, number> = {};
  for (const o of model.opsetImport ?? []) opsets[o.domain ?? ''] = Number(o.version);
  return {
    // Old exporters list initializers as graph inputs too; those are not runtime inputs.
    inputs: (g.input ?? []).filter((v) => !initNames.has(v.name)).map(spec),
    outputs: (g.output ?? []).map(spec),
    externalLocations: [...locations],
    opsets,
  };
}
