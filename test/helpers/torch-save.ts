/**
 * Test-side writer of PyTorch's torch.save zip format (a zip with <archive>/data.pkl, a protocol-2
 * pickle whose tensors reference storages by persistent id, and <archive>/data/<key> raw bytes),
 * so the checkpoint reader can be tested on files this repo produces itself, including variants
 * torch emits (OrderedDict with _metadata, fp16 storages, shared and non-contiguous views).
 */
import * as fs from 'node:fs';
import * as yazl from 'yazl';

export type StorageKind = 'FloatStorage' | 'HalfStorage' | 'BFloat16Storage' | 'LongStorage';

/** A tensor to write: a view (offset/shape/stride in elements) into a storage. */
export interface TensorSpec {
  storageKey: string;
  offset: number;
  shape: number[];
  stride: number[];
}

export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
export class PyOrderedDict {
  constructor(
    readonly entries: Array<[string, PyValue]>,
    readonly metadata?: PyValue,
  ) {}
}
/** A raw call f(*args) pickled with REDUCE, e.g. to smuggle a forbidden global. */
export class PyCall {
  constructor(
    readonly fn: PyGlobal,
    readonly args: PyValue[],
  ) {}
}
export type PyValue =
  null | boolean | number | string | PyValue[] | Map<string, PyValue> | PyTuple | PyOrderedDict | PyCall | TensorSpec;

class PickleWriter {
  private parts: number[] = [];
  constructor(private readonly storages: Map<string, { kind: StorageKind; numel: number }>) {}

  private op(...bytes: number[]): void {
    this.parts.push(...bytes);
  }
  private u32(n: number): void {
    this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  private str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.op(0x58); // BINUNICODE
    this.u32(b.length);
    this.op(...b);
  }
  private global(g: PyGlobal): void {
    this.op(0x63, ...Buffer.from(`${g.module}\n${g.name}\n`, 'latin1')); // GLOBAL
  }
  private int(n: number): void {
    if (n >= 0 && n < 256)
      this.op(0x4b, n); // BININT1
    else if (n >= 0 && n < 65536)
      this.op(0x4d, n & 0xff, n >> 8); // BININT2
    else {
      this.op(0x4a); // BININT
      this.u32(n >>> 0);
    }
  }
  private tuple(items: PyValue[]): void {
    if (items.length === 0) return this.op(0x29);
    this.op(0x28);
    for (const it of items) this.value(it);
    this.op(0x74);
  }

  value(v: PyValue): void {
    if (v === null) this.op(0x4e);
    else if (v === true) this.op(0x88);
    else if (v === false) this.op(0x89);
    else if (typeof v === 'number') {
      if (Number.isInteger(v)) this.int(v);
      else {
        const b = Buffer.alloc(8);
        b.writeDoubleBE(v);
        this.op(0x47, ...b);
      }
    } else if (typeof v === 'string') this.str(v);
    else if (Array.isArray(v)) {
      this.op(0x5d, 0x28); // EMPTY_LIST MARK
      for (const it of v) this.value(it);
      this.op(0x65); // APPENDS
    } else if (v instanceof PyTuple) this.tuple(v.items);
    else if (v instanceof Map) {
      this.op(0x7d, 0x28); // EMPTY_DICT MARK
      for (const [k, x] of v) {
        this.str(k);
        this.value(x);
      }
      this.op(0x75); // SETITEMS
    } else if (v instanceof PyOrderedDict) {
      this.global(new PyGlobal('collections', 'OrderedDict'));
      this.op(0x29, 0x52); // EMPTY_TUPLE REDUCE
      this.op(0x28);
      for (const [k, x] of v.entries) {
        this.str(k);
        this.value(x);
      }
      this.op(0x75);
      if (v.metadata !== undefined) {
        this.value(v.metadata);
        this.op(0x62); // BUILD
      }
    } else if (v instanceof PyCall) {
      this.global(v.fn);
      this.tuple(v.args);
      this.op(0x52);
    } else {
      const s = this.storages.get(v.storageKey);
      if (!s) throw new Error(`unknown storage ${v.storageKey}`);
      this.global(new PyGlobal('torch._utils', '_rebuild_tensor_v2'));
      this.op(0x28); // MARK (args)
      this.op(0x28); // MARK (persistent id tuple)
      this.str('storage');
      this.global(new PyGlobal('torch', s.kind));
      this.str(v.storageKey);
      this.str('cpu');
      this.int(s.numel);
      this.op(0x74, 0x51); // TUPLE BINPERSID
      this.int(v.offset);
      this.tuple(v.shape);
      this.tuple(v.stride);
      this.op(0x89); // requires_grad False
      this.global(new PyGlobal('collections', 'OrderedDict'));
      this.op(0x29, 0x52); // OrderedDict()
      this.op(0x74, 0x52); // TUPLE REDUCE
    }
  }

  finish(root: PyValue): Buffer {
    this.op(0x80, 2);
    this.value(root);
    this.op(0x2e);
    return Buffer.from(this.parts);
  }
}

export interface StorageData {
  kind: StorageKind;
  /** Raw little-endian bytes of the storage. */
  bytes: Buffer;
}

export function elementBytes(kind: StorageKind): number {
  return kind === 'FloatStorage' ? 4 : kind === 'LongStorage' ? 8 : 2;
}

export function pickleTorchObject(root: PyValue, storages: Map<string, StorageData>): Buffer {
  const meta = new Map(
    [...storages].map(([k, s]) => [k, { kind: s.kind, numel: s.bytes.length / elementBytes(s.kind) }]),
  );
  return new PickleWriter(meta).finish(root);
}

/** Writes a torch.save-style zip archive; `archiveName` is the folder inside the zip. */
export async function writeTorchZip(
  file: string,
  archiveName: string,
  pickle: Buffer,
  storages: Map<string, StorageData>,
  compress = false,
): Promise<void> {
  // torch.save stores entries uncompressed; `compress` mimics an archive re-zipped with deflate.
  const zip = new yazl.ZipFile();
  zip.addBuffer(pickle, `${archiveName}/data.pkl`, { compress });
  zip.addBuffer(Buffer.from('little'), `${archiveName}/byteorder`, { compress });
  for (const [key, s] of storages) zip.addBuffer(s.bytes, `${archiveName}/data/${key}`, { compress });
  zip.addBuffer(Buffer.from('3\n'), `${archiveName}/version`, { compress });
  zip.end();
  await new Promise<void>((resolve, reject) => {
    const out = fs.createWriteStream(file);
    zip.outputStream.pipe(out).on('close', resolve).on('error', reject);
  });
}

function f32Bytes(data: Float32Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export interface SaveOptions {
  archiveName?: string;
  /** Wrap as a trainer checkpoint {epoch, name, state_dict: {'module.'+k: t}, optimizer: None}. */
  trainer?: boolean;
  /** Use an OrderedDict with a _metadata attribute, as model.state_dict() pickles. */
  orderedDict?: boolean;
  /** Deflate the zip entries (torch itself stores them). */
  compress?: boolean;
}

/** torch.save(state_dict) for a map of fp32 tensors, one contiguous storage per tensor. */
export async function saveStateDict(
  file: string,
  sd: Map<string, { shape: number[]; data: Float32Array }>,
  opts: SaveOptions = {},
): Promise<void> {
  const storages = new Map<string, StorageData>();
  const entries: Array<[string, PyValue]> = [];
  let i = 0;
  for (const [name, t] of sd) {
    const key = String(i++);
    storages.set(key, { kind: 'FloatStorage', bytes: f32Bytes(t.data) });
    const stride = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    entries.push([opts.trainer ? `module.${name}` : name, { storageKey: key, offset: 0, shape: t.shape, stride }]);
  }
  const dict: PyValue = opts.orderedDict
    ? new PyOrderedDict(
        entries,
        new Map<string, PyValue>([['_metadata', new PyOrderedDict([['', new Map([['version', 1]])]])]]),
      )
    : new Map(entries);
  let root: PyValue = dict;
  if (opts.trainer) {
    // Optimizer state as AdamW keeps it: tensors the reader must parse but never load.
    storages.set('opt0', { kind: 'FloatStorage', bytes: f32Bytes(new Float32Array([0.5, 0.25])) });
    const optimizer = new Map<string, PyValue>([
      [
        'state',
        new Map<string, PyValue>([
          [
            '0',
            new Map<string, PyValue>([
              ['step', 12.0],
              ['exp_avg', { storageKey: 'opt0', offset: 0, shape: [2], stride: [1] }],
            ]),
          ],
        ]),
      ],
      [
        'param_groups',
        [
          new Map<string, PyValue>([
            ['lr', 0.001],
            ['betas', new PyTuple([0.9, 0.98])],
            ['eps', 1e-6],
            ['amsgrad', false],
            ['foreach', null],
            ['params', [0, 1]],
          ]),
        ],
      ],
    ]);
    root = new Map<string, PyValue>([
      ['epoch', 3],
      ['name', 'test-run'],
      ['state_dict', dict],
      ['optimizer', optimizer],
    ]);
  }
  await writeTorchZip(file, opts.archiveName ?? 'archive', pickleTorchObject(root, storages), storages, opts.compress);
}
