/**
 * Reader for PyTorch's `torch.save` zip format (torch >= 1.6):
 *
 *   <archive>/data.pkl      pickle (protocol 2) of the saved object; each tensor is
 *                           torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
 *                           where `storage` is a persistent id
 *                           ('storage', torch.<Type>Storage, key, location, numel)
 *   <archive>/data/<key>    the raw little-endian bytes of storage <key>
 *   <archive>/byteorder     optional, "little" or "big"
 *
 * The archive folder name is whatever the file was called when saved, so it is discovered, not
 * assumed. The pickle runs in the strict VM of ./pickle with an allowlist of torch's rebuild
 * functions and collections.OrderedDict. Tensors come back as lazy references; `materialize`
 * reads one storage at a time, so peak memory is the state dict plus the largest storage.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as yauzl from 'yauzl';
import type { WeightDType } from './dtype';
import { BYTES_PER_ELEMENT, decodeToF32 } from './dtype';
import { CheckpointError } from './errors';
import { PickleError, PickleGlobal, unpickle } from './pickle';
import type { StateDict } from '../model/state-dict';
import { numel } from '../model/state-dict';
import type { ReadProgress } from './progress';

/** Storage classes torch pickles, with their element type. Only float types can become weights,
 *  but integer/bool storages are accepted so that checkpoints carrying e.g. int64 buffers or
 *  optimizer step counters still parse; reading one as a weight is refused later. */
const STORAGE_TYPES: Record<string, { dtype: WeightDType | 'int'; bytes: number }> = {
  FloatStorage: { dtype: 'F32', bytes: 4 },
  HalfStorage: { dtype: 'F16', bytes: 2 },
  BFloat16Storage: { dtype: 'BF16', bytes: 2 },
  DoubleStorage: { dtype: 'F64', bytes: 8 },
  LongStorage: { dtype: 'int', bytes: 8 },
  IntStorage: { dtype: 'int', bytes: 4 },
  ShortStorage: { dtype: 'int', bytes: 2 },
  CharStorage: { dtype: 'int', bytes: 1 },
  ByteStorage: { dtype: 'int', bytes: 1 },
  BoolStorage: { dtype: 'int', bytes: 1 },
};

const HOST_IS_LE = os.endianness() === 'LE';

export interface TorchStorageRef {
  key: string;
  typeName: string;
  dtype: WeightDType | 'int';
  elementBytes: number;
  numel: number;
}

/** A tensor as the pickle describes it: a strided view into a storage. */
export class TorchTensorRef {
  constructor(
    readonly storage: TorchStorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}

  /** torch calls BUILD on tensors only for Python-level attributes, which weights never carry. */
  pickleBuild(state: unknown): void {
    const empty =
      state === null ||
      (state instanceof Map && state.size === 0) ||
      (Array.isArray(state) && state.every((s) => s === null || (s instanceof Map && s.size === 0)));
    if (!empty) throw new PickleError('tensor carries Python attributes (BUILD state), which is not supported');
  }
}

function asIntList(v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every((d) => typeof d === 'number' && Number.isSafeInteger(d))) {
    throw new PickleError(`${what} is not a tuple of integers`);
  }
  return v as number[];
}

function rebuildTensor(args: unknown[]): TorchTensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage && typeof storage === 'object' && 'key' in storage))
    throw new PickleError('tensor rebuild without a storage');
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
    throw new PickleError('tensor storage offset is not a non-negative integer');
  const shape = asIntList(size, 'tensor size');
  const strides = asIntList(stride, 'tensor stride');
  if (shape.length !== strides.length)
    throw new PickleError(`tensor size ${JSON.stringify(shape)} and stride ${JSON.stringify(strides)} differ in rank`);
  return new TorchTensorRef(storage as TorchStorageRef, offset, shape, strides);
}

/** The only Python globals a weights checkpoint needs. */
function torchAllowlist(module: string, name: string): PickleGlobal | undefined {
  if (module === 'collections' && name === 'OrderedDict') {
    return new PickleGlobal(module, name, (args) => {
      if (args.length !== 0) throw new PickleError('OrderedDict(...) with arguments is not supported');
      return new Map();
    });
  }
  if (module === 'torch._utils') {
    if (name === '_rebuild_tensor_v2' || name === '_rebuild_tensor')
      return new PickleGlobal(module, name, rebuildTensor);
    // nn.Parameter(data, requires_grad, backward_hooks): the data tensor is all a weight needs.
    if (name === '_rebuild_parameter' || name === '_rebuild_parameter_with_state') {
      return new PickleGlobal(module, name, (args) => {
        if (!(args[0] instanceof TorchTensorRef)) throw new PickleError(`${name} without a tensor`);
        return args[0];
      });
    }
  }
  if (module === 'torch' && Object.prototype.hasOwnProperty.call(STORAGE_TYPES, name))
    return new PickleGlobal(module, name);
  return undefined;
}

export interface TorchArchive {
  /** The unpickled root object (dicts are Maps, tensors TorchTensorRef). */
  root: unknown;
  /** Reads storage <key> fully into memory (into `into` when given, which must fit exactly). */
  readStorage(key: string, into?: Uint8Array): Promise<Buffer>;
  close(): Promise<void>;
}

async function listEntries(zip: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, yauzl.Entry>();
    zip.on('entry', (e: yauzl.Entry) => {
      entries.set(e.fileName, e);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', reject);
    zip.readEntry();
  });
}

/**
 * Reads a whole entry, into `into` when given (it must have the entry's exact size). torch.save
 * stores entries uncompressed; those are read with positioned reads straight from the file, which
 * is several times faster than yauzl's stream. Compressed entries (re-zipped archives) stream.
 */
async function readEntry(
  zip: yauzl.ZipFile,
  fh: fsp.FileHandle,
  entry: yauzl.Entry,
  into?: Uint8Array,
): Promise<Buffer> {
  if (into && into.byteLength !== entry.uncompressedSize) {
    throw new Error(`zip entry ${entry.fileName} has ${entry.uncompressedSize} bytes, expected ${into.byteLength}`);
  }
  const out = into
    ? Buffer.from(into.buffer, into.byteOffset, into.byteLength)
    : Buffer.allocUnsafe(entry.uncompressedSize);
  const encrypted = (entry.generalPurposeBitFlag & 1) !== 0;
  if (entry.compressionMethod === 0 && !encrypted) {
    if (entry.compressedSize !== entry.uncompressedSize)
      throw new Error(`stored zip entry ${entry.fileName} has inconsistent sizes`);
    const { fileDataStart } = await zip.readLocalFileHeaderPromise(entry, { minimal: true });
    let filled = 0;
    while (filled < out.length) {
      const { bytesRead } = await fh.read(out, filled, Math.min(out.length - filled, 1 << 30), fileDataStart + filled);
      if (bytesRead === 0) throw new Error(`zip entry ${entry.fileName} is truncated`);
      filled += bytesRead;
    }
    return out;
  }
  const stream = await zip.openReadStreamPromise(entry);
  let filled = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    if (filled + chunk.length > out.length)
      throw new Error(`zip entry ${entry.fileName} is longer than its header says`);
    chunk.copy(out, filled);
    filled += chunk.length;
  }
  if (filled !== out.length) throw new Error(`zip entry ${entry.fileName} is shorter than its header says`);
  return out;
}

/** True when the first bytes are a zip local-file header ("PK\x03\x04"). */
export function looksLikeZip(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
}

export async function openTorchArchive(file: string): Promise<TorchArchive> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false });
  } catch (e) {
    throw new CheckpointError(
      `not a torch.save zip archive (${(e as Error).message}); checkpoints written by torch < 1.6 or with ` +
        '_use_new_zipfile_serialization=False are not supported: re-save them with a current torch or as safetensors',
      file,
    );
  }
  const fh = await fsp.open(file, 'r');
  const closeAll = async (): Promise<void> => {
    zip.close();
    await fh.close();
  };
  try {
    const entries = await listEntries(zip);
    const pkls = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) {
      throw new CheckpointError(
        `expected exactly one <archive>/data.pkl in the torch.save zip, found ${pkls.length}`,
        file,
      );
    }
    const prefix = pkls[0].slice(0, -'data.pkl'.length);
    const byteorderEntry = entries.get(`${prefix}byteorder`);
    if (byteorderEntry) {
      const order = (await readEntry(zip, fh, byteorderEntry)).toString('utf8').trim();
      if (order !== 'little')
        throw new CheckpointError(
          `checkpoint was saved with byteorder "${order}"; only little-endian is supported`,
          file,
        );
    }
    const storages = new Map<string, TorchStorageRef>();
    const pickleBytes = await readEntry(zip, fh, entries.get(pkls[0])!);
    let root: unknown;
    try {
      root = unpickle(pickleBytes, {
        resolveGlobal: torchAllowlist,
        persistentLoad(pid) {
          if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5) {
            throw new PickleError(`unsupported persistent id ${JSON.stringify(pid)}`);
          }
          const [, type, key, , count] = pid as [string, unknown, unknown, unknown, unknown];
          if (!(type instanceof PickleGlobal) || !STORAGE_TYPES[type.name])
            throw new PickleError('persistent id without a torch storage type');
          if (typeof key !== 'string' || typeof count !== 'number')
            throw new PickleError(`malformed storage reference ${JSON.stringify(pid)}`);
          const known = storages.get(key);
          if (known) return known;
          const info = STORAGE_TYPES[type.name];
          const ref: TorchStorageRef = {
            key,
            typeName: type.name,
            dtype: info.dtype,
            elementBytes: info.bytes,
            numel: count,
          };
          storages.set(key, ref);
          return ref;
        },
      });
    } catch (e) {
      if (e instanceof PickleError) throw new CheckpointError(e.message, file);
      throw e;
    }
    return {
      root,
      async readStorage(key: string, into?: Uint8Array): Promise<Buffer> {
        const entry = entries.get(`${prefix}data/${key}`);
        if (!entry) throw new CheckpointError(`storage ${prefix}data/${key} is missing from the archive`, file);
        try {
          return await readEntry(zip, fh, entry, into);
        } catch (e) {
          throw new CheckpointError((e as Error).message, file);
        }
      },
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** Row-major strides for `shape`; dimensions of size 1 may have any stride. */
function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Copies a strided view out of a storage into a fresh C-ordered fp32 array. */
function gather(name: string, t: TorchTensorRef, bytes: Buffer, file: string): Float32Array {
  const dtype = t.storage.dtype;
  if (dtype === 'int') {
    throw new CheckpointError(
      `tensor "${name}" is stored as ${t.storage.typeName}; weights must be float32, float16, bfloat16 or float64`,
      file,
    );
  }
  const count = numel(t.shape);
  const width = BYTES_PER_ELEMENT[dtype];
  const storageElems = Math.floor(bytes.length / width);
  const out = new Float32Array(count);
  if (count === 0) return out;
  // Highest storage index the view touches, to reject out-of-range views before reading.
  let last = t.offset;
  for (let d = 0; d < t.shape.length; d++) {
    if (t.stride[d] < 0) throw new CheckpointError(`tensor "${name}" has a negative stride`, file);
    last += (t.shape[d] - 1) * t.stride[d];
  }
  if (last >= storageElems) {
    throw new CheckpointError(
      `tensor "${name}" reads element ${last} of a storage with ${storageElems} elements`,
      file,
    );
  }
  if (isContiguous(t.shape, t.stride)) {
    decodeToF32(dtype, bytes, t.offset * width, count, out, 0);
    return out;
  }
  // Non-contiguous (e.g. a transposed or sliced view): walk the index space in C order.
  const rank = t.shape.length;
  const idx = new Array<number>(rank).fill(0);
  const one = new Float32Array(1);
  let src = t.offset;
  for (let i = 0; i < count; i++) {
    decodeToF32(dtype, bytes, src * width, 1, one, 0);
    out[i] = one[0];
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      src += t.stride[d];
      if (idx[d] < t.shape[d]) break;
      src -= t.stride[d] * t.shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * Reads the tensors of `tensors` (name → reference) into fp32, one storage at a time, releasing
 * each storage once every tensor that views it has been copied out.
 */
export async function materialize(
  archive: TorchArchive,
  tensors: Map<string, TorchTensorRef>,
  file: string,
  onProgress?: ReadProgress,
): Promise<StateDict> {
  const byStorage = new Map<string, Array<[string, TorchTensorRef]>>();
  for (const [name, t] of tensors) {
    const list = byStorage.get(t.storage.key) ?? [];
    list.push([name, t]);
    byStorage.set(t.storage.key, list);
  }
  const total = [...byStorage.values()].reduce((a, l) => a + l[0][1].storage.numel * l[0][1].storage.elementBytes, 0);
  let done = 0;
  const out: StateDict = new Map();
  for (const [key, list] of byStorage) {
    const storage = list[0][1].storage;
    const [name0, t0] = list[0];
    if (
      list.length === 1 &&
      storage.dtype === 'F32' &&
      HOST_IS_LE &&
      t0.offset === 0 &&
      numel(t0.shape) === storage.numel &&
      isContiguous(t0.shape, t0.stride)
    ) {
      // The common case, one fp32 tensor owning its whole storage: read straight into the result.
      const data = new Float32Array(storage.numel);
      await archive.readStorage(key, new Uint8Array(data.buffer));
      out.set(name0, { shape: [...t0.shape], data });
      done += storage.numel * storage.elementBytes;
      onProgress?.(done, total);
      continue;
    }
    const bytes = await archive.readStorage(key);
    if (bytes.length < storage.numel * storage.elementBytes) {
      throw new CheckpointError(
        `storage ${key} has ${bytes.length} bytes, but the pickle declares ${storage.numel} × ${storage.typeName}`,
        file,
      );
    }
    for (const [name, t] of list) out.set(name, { shape: [...t.shape], data: gather(name, t, bytes, file) });
    done += storage.numel * storage.elementBytes;
    onProgress?.(done, total);
  }
  // Keep the pickle's key order, which is the module order a reader expects.
  return new Map([...tensors.keys()].map((k) => [k, out.get(k)!]));
}
