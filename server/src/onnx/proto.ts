/**
 * The ONNX protobuf schema, loaded at runtime with protobufjs from the schema file shipped in
 * server/third_party/onnx/ (next to the package, not under proto/, which is clipserve's own API).
 */
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { PACKAGE_ROOT } from '../util/paths';

export const ONNX_PROTO_FILE = path.join(PACKAGE_ROOT, 'server', 'third_party', 'onnx', 'onnx.proto');

/** TensorProto.DataType values used by clipserve. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  FLOAT16: 10,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

export const DATA_TYPE_NAMES: Record<number, string> = {
  0: 'undefined',
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  16: 'bfloat16',
};

/** AttributeProto.AttributeType values. */
export const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

let cached: { model: protobuf.Type } | undefined;

function types(): { model: protobuf.Type } {
  if (!cached) {
    const root = protobuf.loadSync(ONNX_PROTO_FILE);
    cached = { model: root.lookupType('onnx.ModelProto') };
  }
  return cached;
}

/** Plain-object mirrors of the messages, as clipserve builds and reads them. int64 fields are
 *  JavaScript numbers: every int64 in our models (dims, attributes, ir_version) is far below 2^53. */
export interface TensorShapeDim {
  dimValue?: number;
  dimParam?: string;
}
export interface ValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: TensorShapeDim[] } } };
}
export interface StringEntry {
  key: string;
  value: string;
}
export interface TensorMsg {
  name: string;
  dims: number[];
  dataType: number;
  rawData?: Uint8Array;
  dataLocation?: number;
  externalData?: StringEntry[];
}
export interface AttributeMsg {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  ints?: number[];
  floats?: number[];
  t?: TensorMsg;
}
export interface NodeMsg {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain?: string;
  attribute: AttributeMsg[];
}
export interface GraphMsg {
  name: string;
  node: NodeMsg[];
  initializer: TensorMsg[];
  input: ValueInfo[];
  output: ValueInfo[];
  docString?: string;
}
export interface ModelMsg {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  graph: GraphMsg;
  opsetImport: { domain: string; version: number }[];
  metadataProps?: StringEntry[];
  docString?: string;
}

export function encodeModel(model: ModelMsg): Uint8Array {
  const T = types().model;
  const err = T.verify(model);
  if (err) throw new Error(`invalid ONNX model message: ${err}`);
  return T.encode(T.fromObject(model)).finish();
}

export function decodeModel(bytes: Uint8Array): ModelMsg {
  const T = types().model;
  const msg = T.decode(bytes);
  return T.toObject(msg, { longs: Number, defaults: false, arrays: true }) as unknown as ModelMsg;
}
