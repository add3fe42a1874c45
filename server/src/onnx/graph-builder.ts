/**
 * A small builder for ONNX graphs: nodes with typed attributes, graph inputs/outputs, small
 * constants stored inline, and weights that go to external data above a size threshold (in fp32
 * or fp16). It produces the plain message objects of ./proto, which `encodeModel` serialises.
 */
import {
  AttributeType,
  DataType,
  type AttributeMsg,
  type GraphMsg,
  type ModelMsg,
  type NodeMsg,
  type TensorMsg,
  type TensorShapeDim,
  type ValueInfo,
} from './proto';
import { ExternalDataWriter } from './external-data';
import { toHalfInto } from './fp16';

/** Opset 17 is the first with LayerNormalization; onnxruntime 1.16+ runs it everywhere. */
export const ONNX_OPSET = 17;
/** IR version 8 is the one that goes with opset 17. */
export const ONNX_IR_VERSION = 8;
export const MS_DOMAIN = 'com.microsoft';

export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'floats'; value: number[] }
  | { kind: 'string'; value: string };

/** Attribute constructors: ONNX attributes are typed, and JS numbers do not say int or float. */
export const attr = {
  int: (value: number): Attr => ({ kind: 'int', value }),
  float: (value: number): Attr => ({ kind: 'float', value }),
  ints: (value: number[]): Attr => ({ kind: 'ints', value }),
  floats: (value: number[]): Attr => ({ kind: 'floats', value }),
  string: (value: string): Attr => ({ kind: 'string', value }),
};

export type Dim = number | string;

export interface WeightStorage {
  /** Where tensors of at least `thresholdBytes` go; smaller ones stay inline in the .onnx. */
  external?: { writer: ExternalDataWriter; location: string; thresholdBytes: number };
  /** Store float weights as float16 (each followed by a Cast back to float32 in the graph). */
  half: boolean;
}

function toAttribute(name: string, a: Attr): AttributeMsg {
  switch (a.kind) {
    case 'int':
      return { name, type: AttributeType.INT, i: a.value };
    case 'float':
      return { name, type: AttributeType.FLOAT, f: a.value };
    case 'ints':
      return { name, type: AttributeType.INTS, ints: a.value };
    case 'floats':
      return { name, type: AttributeType.FLOATS, floats: a.value };
    case 'string':
      return { name, type: AttributeType.STRING, s: Buffer.from(a.value, 'utf8') };
  }
}

function valueInfo(name: string, elemType: number, dims: Dim[]): ValueInfo {
  const dim: TensorShapeDim[] = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

function bytesOf(a: Float32Array | Int32Array | BigInt64Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export class GraphBuilder {
  private readonly nodes: NodeMsg[] = [];
  private readonly initializers: TensorMsg[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly names = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private counter = 0;
  private usesMsDomain = false;

  constructor(
    readonly graphName: string,
    private readonly storage: WeightStorage,
  ) {}

  /** A fresh value/node name derived from `hint`. */
  fresh(hint: string): string {
    let name = hint;
    while (this.names.has(name)) name = `${hint}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  input(name: string, elemType: number, dims: Dim[]): string {
    if (this.names.has(name)) throw new Error(`duplicate graph value name ${name}`);
    this.names.add(name);
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Declares `value` as a graph output called `name` (through an Identity when they differ). */
  output(value: string, name: string, elemType: number, dims: Dim[]): void {
    const out = value === name ? value : this.node('Identity', [value], {}, { outputs: [name] })[0];
    this.outputs.push(valueInfo(out, elemType, dims));
  }

  /** Adds a node and returns its output names (`outputs`: a count of fresh names, or exact names). */
  node(
    opType: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    opts: { domain?: string; outputs?: number | string[]; name?: string } = {},
  ): string[] {
    const base = opts.name ?? opType;
    const nodeName = this.fresh(`${base}_node`);
    const outs = Array.isArray(opts.outputs)
      ? opts.outputs.map((o) => {
          if (this.names.has(o)) throw new Error(`duplicate graph value name ${o}`);
          this.names.add(o);
          return o;
        })
      : Array.from({ length: opts.outputs ?? 1 }, (_, i) => this.fresh(`${base}${i ? `_${i}` : ''}`));
    if (opts.domain === MS_DOMAIN) this.usesMsDomain = true;
    this.nodes.push({
      name: nodeName,
      opType,
      input: inputs,
      output: outs,
      attribute: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
      ...(opts.domain ? { domain: opts.domain } : {}),
    });
    return outs;
  }

  /** One-output shorthand for `node`. */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, Attr> = {},
    opts: { domain?: string; name?: string } = {},
  ): string {
    return this.node(opType, inputs, attrs, opts)[0];
  }

  /** A small int64 constant (shapes, axes, indices), deduplicated. `dims` defaults to 1-D. */
  constI64(values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh(`const_i64_${values.length <= 4 ? values.join('_').replace(/-/g, 'm') : 'v'}`);
    this.initializers.push({
      name,
      dims,
      dataType: DataType.INT64,
      rawData: bytesOf(BigInt64Array.from(values.map(BigInt))),
    });
    this.constCache.set(key, name);
    return name;
  }

  /** A small float32 constant computed by the builder (scales, masks), always stored as fp32 inline. */
  constF32(hint: string, values: Float32Array, dims: number[]): string {
    const name = this.fresh(hint);
    this.initializers.push({ name, dims, dataType: DataType.FLOAT, rawData: Buffer.from(bytesOf(values)) });
    return name;
  }

  /**
   * A model weight, stored in the model precision (fp16 weights are cast back to fp32 right after
   * loading, which onnxruntime folds into a constant once) and externally when large. Returns the
   * name of the float32 value the graph computes with.
   */
  weight(name: string, data: Float32Array, dims: number[]): string {
    if (this.names.has(name)) throw new Error(`duplicate graph value name ${name}`);
    this.names.add(name);
    const half = this.storage.half;
    const byteLength = data.length * (half ? 2 : 4);
    const tensor: TensorMsg = { name, dims, dataType: half ? DataType.FLOAT16 : DataType.FLOAT };
    const ext = this.storage.external;
    if (ext && byteLength >= ext.thresholdBytes) {
      const { offset, length } = ext.writer.writeFloats(data, half);
      tensor.dataLocation = 1;
      tensor.externalData = [
        { key: 'location', value: ext.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
    } else if (half) {
      const bits = new Uint16Array(data.length);
      toHalfInto(data, 0, bits);
      tensor.rawData = bytesOf(bits);
    } else {
      tensor.rawData = Buffer.from(bytesOf(data)); // own copy: small, and detaches from caller memory
    }
    this.initializers.push(tensor);
    if (!half) return name;
    return this.op('Cast', [name], { to: attr.int(DataType.FLOAT) }, { name: `${name}_f32` });
  }

  /**
   * A weight stored exactly as given, whatever the model precision: int8 quantized values and
   * their float32 scales. External when large, like `weight`. Returns the initializer's name.
   */
  exactWeight(name: string, data: Int8Array | Float32Array, dims: number[]): string {
    if (this.names.has(name)) throw new Error(`duplicate graph value name ${name}`);
    this.names.add(name);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const tensor: TensorMsg = { name, dims, dataType: data instanceof Int8Array ? DataType.INT8 : DataType.FLOAT };
    const ext = this.storage.external;
    if (ext && bytes.byteLength >= ext.thresholdBytes) {
      const { offset, length } = ext.writer.writeBytes(bytes);
      tensor.dataLocation = 1;
      tensor.externalData = [
        { key: 'location', value: ext.location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
    } else {
      tensor.rawData = Buffer.from(bytes);
    }
    this.initializers.push(tensor);
    return name;
  }

  /** A small uint8 constant (quantization zero points), deduplicated. */
  constU8(values: number[], dims: number[] = [values.length]): string {
    const key = `u8:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh('const_u8');
    this.initializers.push({ name, dims, dataType: DataType.UINT8, rawData: Buffer.from(Uint8Array.from(values)) });
    this.constCache.set(key, name);
    return name;
  }

  build(meta: { producerVersion: string; docString?: string; metadata?: Record<string, string> }): ModelMsg {
    const graph: GraphMsg = {
      name: this.graphName,
      node: this.nodes,
      initializer: this.initializers,
      input: this.inputs,
      output: this.outputs,
    };
    const opsetImport = [{ domain: '', version: ONNX_OPSET }];
    if (this.usesMsDomain) opsetImport.push({ domain: MS_DOMAIN, version: 1 });
    return {
      irVersion: ONNX_IR_VERSION,
      producerName: 'clipserve',
      producerVersion: meta.producerVersion,
      graph,
      opsetImport,
      ...(meta.docString ? { docString: meta.docString } : {}),
      ...(meta.metadata
        ? { metadataProps: Object.entries(meta.metadata).map(([key, value]) => ({ key, value })) }
        : {}),
    };
  }
}
