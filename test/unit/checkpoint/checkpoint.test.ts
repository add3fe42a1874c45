import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  CheckpointError,
  readCheckpointFile,
  readOpenClipDir,
  expectedStateDictShapes,
} from '../../../server/src/checkpoint';
import { readSafetensors } from '../../../server/src/checkpoint/safetensors';
import { unpickle, PickleGlobal } from '../../../server/src/checkpoint/pickle';
import { readConfigFile } from '../../../server/src/checkpoint';
import type { StateDict } from '../../../server/src/model/state-dict';
import { describeGolden, goldenPath } from '../../helpers/shared';
import {
  PyCall,
  PyGlobal,
  PyTuple,
  type PyValue,
  pickleTorchObject,
  saveStateDict,
  writeTorchZip,
  type StorageData,
} from '../../helpers/torch-save';

const MODELS = ['tiny-gelu', 'tiny-quickgelu', 'small-l14like'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-ckpt-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function expectSameStateDict(a: StateDict, b: StateDict): void {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    expect({ k, shape: u.shape }).toEqual({ k, shape: t.shape });
    // Bit-identical: Buffer.equals compares raw bytes, so NaN payloads and -0 count too.
    expect(
      Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength).equals(
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      ),
    ).toBe(true);
  }
}

/** Minimal safetensors writer for dtype tests. */
function writeSafetensors(
  file: string,
  tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: Buffer }>,
): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => t.bytes)]));
}

function u16s(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, i * 2));
  return b;
}

describeGolden('checkpoint readers on the golden models', () => {
  test.each(MODELS)('%s safetensors has every key and shape of index.json, 0-d logit_scale', async (model) => {
    const index = JSON.parse(fs.readFileSync(goldenPath('model', model, 'index.json'), 'utf8'));
    const expected = index.files.weights.keys_and_shapes as Record<string, number[]>;
    const sd = await readSafetensors(goldenPath('model', model, 'open_clip_model.safetensors'));
    expect(sd.size).toBe(Object.keys(expected).length);
    for (const [k, shape] of Object.entries(expected)) expect(sd.get(k)?.shape).toEqual(shape);
    const scale = sd.get('logit_scale')!;
    expect(scale.shape).toEqual([]);
    expect(Math.exp(scale.data[0])).toBeCloseTo(model === 'small-l14like' ? 50 : 100, 3);
    // The config-derived layout is exactly the checkpoint's.
    const config = readConfigFile(goldenPath('model', model, 'open_clip_config.json'));
    expect(new Map([...expectedStateDictShapes(config)].sort())).toEqual(new Map(Object.entries(expected).sort()));
  });

  test('tiny-gelu: torch.save .bin and trainer epoch_3.pt give the safetensors weights bit for bit', async () => {
    const ref = (await readCheckpointFile(goldenPath('model', 'tiny-gelu', 'open_clip_model.safetensors'))).stateDict;
    const bin = await readCheckpointFile(goldenPath('model', 'tiny-gelu', 'open_clip_pytorch_model.bin'));
    expect(bin.format).toBe('torch-zip');
    expectSameStateDict(ref, bin.stateDict);
    const epoch = await readCheckpointFile(goldenPath('model', 'tiny-gelu', 'epoch_3.pt'));
    expectSameStateDict(ref, epoch.stateDict);
  });

  test.each(MODELS)(
    '%s: a .bin written here in torch.save format reads back identical (plain, OrderedDict, trainer, deflated)',
    async (model) => {
      const { stateDict: ref } = await readCheckpointFile(goldenPath('model', model, 'open_clip_model.safetensors'));
      const variants = [
        { archiveName: 'archive' },
        { archiveName: 'open_clip_pytorch_model', orderedDict: true },
        { archiveName: 'epoch_7', trainer: true, orderedDict: true },
        { archiveName: 'rezipped', compress: true },
      ];
      for (const [i, v] of variants.entries()) {
        const file = path.join(tmp, `${model}-${i}.bin`);
        await saveStateDict(file, ref, v);
        expectSameStateDict(ref, (await readCheckpointFile(file)).stateDict);
      }
    },
  );

  test('readOpenClipDir: hub directory, explicit trainer checkpoint, and clear errors', async () => {
    const dir = goldenPath('model', 'tiny-gelu');
    const fromDir = await readOpenClipDir(dir);
    expect(fromDir.source.weightsFile).toBe(path.join(dir, 'open_clip_model.safetensors'));
    expect(fromDir.source.unusedKeys).toEqual([]);
    expect(fromDir.config.model_cfg.vision_cfg.width).toBe(64);
    const fromEpoch = await readOpenClipDir(path.join(dir, 'epoch_3.pt'));
    expect(fromEpoch.source.format).toBe('torch-zip');
    expectSameStateDict(fromDir.stateDict, fromEpoch.stateDict);

    // A checkpoint file alone, with no config beside it.
    const lone = path.join(tmp, 'lone');
    fs.mkdirSync(lone);
    fs.copyFileSync(path.join(dir, 'epoch_3.pt'), path.join(lone, 'epoch_3.pt'));
    await expect(readOpenClipDir(path.join(lone, 'epoch_3.pt'))).rejects.toThrow(/--config/);
    const withConfig = await readOpenClipDir(path.join(lone, 'epoch_3.pt'), {
      config: path.join(dir, 'open_clip_config.json'),
    });
    expectSameStateDict(fromDir.stateDict, withConfig.stateDict);
    // A directory with a config but no weights names what it looked for and the epoch file.
    fs.copyFileSync(path.join(dir, 'open_clip_config.json'), path.join(lone, 'open_clip_config.json'));
    await expect(readOpenClipDir(lone)).rejects.toThrow(/open_clip_model\.safetensors.*epoch_3\.pt/s);
    // The wrong config for the weights.
    await expect(
      readOpenClipDir(dir, { config: goldenPath('model', 'small-l14like', 'open_clip_config.json') }),
    ).rejects.toThrow(/does not match open_clip_config\.json/);
  });
});

describe('torch.save zip details', () => {
  const f32 = (xs: number[]): Buffer => Buffer.from(new Float32Array(xs).buffer);

  test('non-contiguous views, shared storage, offsets, 0-d tensors and fp16/bf16 storages', async () => {
    const storages = new Map<string, StorageData>([
      ['s', { kind: 'FloatStorage', bytes: f32([0, 1, 2, 3, 4, 5, 6, 7, 8]) }],
      ['h', { kind: 'HalfStorage', bytes: u16s([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x3555]) }],
      ['b', { kind: 'BFloat16Storage', bytes: u16s([0x3f80, 0xc049, 0x0000, 0x8000]) }],
    ]);
    const root = new Map([
      // 2x3 matrix stored row-major at offset 0 and its transpose (3x2, strides [1, 3]).
      ['m', { storageKey: 's', offset: 0, shape: [2, 3], stride: [3, 1] }],
      ['mt', { storageKey: 's', offset: 0, shape: [3, 2], stride: [1, 3] }],
      // every second element starting at 1
      ['odd', { storageKey: 's', offset: 1, shape: [4], stride: [2] }],
      ['scalar', { storageKey: 's', offset: 8, shape: [], stride: [] }],
      ['half', { storageKey: 'h', offset: 0, shape: [6], stride: [1] }],
      ['bf', { storageKey: 'b', offset: 0, shape: [2, 2], stride: [2, 1] }],
    ]);
    const file = path.join(tmp, 'views.pt');
    await writeTorchZip(file, 'some name', pickleTorchObject(root, storages), storages);
    const { stateDict: sd } = await readCheckpointFile(file);
    expect([...sd.get('m')!.data]).toEqual([0, 1, 2, 3, 4, 5]);
    expect(sd.get('mt')!.shape).toEqual([3, 2]);
    expect([...sd.get('mt')!.data]).toEqual([0, 3, 1, 4, 2, 5]);
    expect([...sd.get('odd')!.data]).toEqual([1, 3, 5, 7]);
    expect(sd.get('scalar')).toEqual({ shape: [], data: new Float32Array([8]) });
    expect([...sd.get('half')!.data]).toEqual([1, -2, 0.5, 65504, 2 ** -24, 0.333251953125]);
    expect([...sd.get('bf')!.data]).toEqual([1, -3.140625, 0, -0]);
  });

  test('refuses globals outside the allowlist, naming them', async () => {
    const storages = new Map<string, StorageData>();
    const root = new Map<string, PyValue>([['x', new PyCall(new PyGlobal('os', 'system'), ['echo pwned'])]]);
    const file = path.join(tmp, 'evil.pt');
    await writeTorchZip(file, 'archive', pickleTorchObject(root, storages), storages);
    const err = await readCheckpointFile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as Error).message).toMatch(/"os\.system".*not allowed/);
    // The VM itself: a builtin smuggled through REDUCE is refused too.
    const bytes = Buffer.from('\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.', 'latin1');
    expect(() => unpickle(bytes, { resolveGlobal: () => undefined })).toThrow(/builtins\.eval/);
    // A value global (no call) cannot be invoked.
    expect(() => unpickle(bytes, { resolveGlobal: (m, n) => new PickleGlobal(m, n) })).toThrow(/not allowed/);
  });

  test('integer storages, truncated data and non-checkpoints give typed errors', async () => {
    const storages = new Map<string, StorageData>([['0', { kind: 'LongStorage', bytes: Buffer.alloc(16) }]]);
    const file = path.join(tmp, 'ints.pt');
    await writeTorchZip(
      file,
      'archive',
      pickleTorchObject(new Map([['ids', { storageKey: '0', offset: 0, shape: [2], stride: [1] }]]), storages),
      storages,
    );
    await expect(readCheckpointFile(file)).rejects.toThrow(/LongStorage/);

    const short = new Map<string, StorageData>([['0', { kind: 'FloatStorage', bytes: f32([1, 2]) }]]);
    const bad = path.join(tmp, 'short.pt');
    // The pickle claims a 4-element view of a 2-element storage.
    await writeTorchZip(
      bad,
      'archive',
      pickleTorchObject(new Map([['w', { storageKey: '0', offset: 0, shape: [4], stride: [1] }]]), short),
      short,
    );
    await expect(readCheckpointFile(bad)).rejects.toThrow(CheckpointError);

    const notTensors = path.join(tmp, 'nothing.pt');
    await writeTorchZip(
      notTensors,
      'archive',
      pickleTorchObject(
        new Map<string, PyValue>([
          ['epoch', 1],
          ['args', new PyTuple([])],
        ]),
        new Map(),
      ),
      new Map(),
    );
    await expect(readCheckpointFile(notTensors)).rejects.toThrow(/no tensors found/);

    const text = path.join(tmp, 'readme.txt');
    fs.writeFileSync(text, 'hello world, not weights');
    await expect(readCheckpointFile(text)).rejects.toThrow(/unrecognised checkpoint format/);
    await expect(readCheckpointFile(path.join(tmp, 'missing.bin'))).rejects.toThrow(/file not found/);
  });
});

describe('safetensors details', () => {
  test('F16 and BF16 are widened exactly; bad offsets and dtypes are refused', async () => {
    const file = path.join(tmp, 'half.safetensors');
    writeSafetensors(file, [
      { name: 'module.a', dtype: 'F16', shape: [2, 2], bytes: u16s([0x3c00, 0xc000, 0x0001, 0xfbff]) },
      { name: 'module.b', dtype: 'BF16', shape: [2], bytes: u16s([0x3f80, 0x4049]) },
      { name: 'module.logit_scale', dtype: 'F32', shape: [1], bytes: Buffer.from(new Float32Array([4.5]).buffer) },
    ]);
    const sd = await readSafetensors(file);
    expect([...sd.get('module.a')!.data]).toEqual([1, -2, 2 ** -24, -65504]);
    expect([...sd.get('module.b')!.data]).toEqual([1, 3.140625]);
    // readCheckpointFile strips module. and makes logit_scale 0-d.
    const norm = (await readCheckpointFile(file)).stateDict;
    expect([...norm.keys()]).toEqual(['a', 'b', 'logit_scale']);
    expect(norm.get('logit_scale')!.shape).toEqual([]);

    const ints = path.join(tmp, 'ints.safetensors');
    writeSafetensors(ints, [{ name: 'ids', dtype: 'I64', shape: [1], bytes: Buffer.alloc(8) }]);
    await expect(readSafetensors(ints)).rejects.toThrow(/"ids" has dtype "I64"/);

    const trunc = path.join(tmp, 'trunc.safetensors');
    writeSafetensors(trunc, [{ name: 'w', dtype: 'F32', shape: [4], bytes: Buffer.alloc(16) }]);
    fs.truncateSync(trunc, fs.statSync(trunc).size - 4);
    await expect(readSafetensors(trunc)).rejects.toThrow(/data_offsets/);
  });
});
