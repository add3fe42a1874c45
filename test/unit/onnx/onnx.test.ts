/** The ONNX writing layer: fp16 conversion, the graph builder with external data, and the two
 *  attention formulations of the towers agreeing with each other. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors } from '../../../server/src/checkpoint/safetensors';
import { ExternalDataWriter, EXTERNAL_DATA_ALIGNMENT } from '../../../server/src/onnx/external-data';
import { floatToHalfBits, halfBitsToFloat } from '../../../server/src/onnx/fp16';
import { attr, GraphBuilder, ONNX_OPSET } from '../../../server/src/onnx/graph-builder';
import { readOnnxSignature } from '../../../server/src/onnx/inspect';
import { DataType, decodeModel, encodeModel } from '../../../server/src/onnx/proto';
import { writeTowerModel } from '../../../server/src/onnx/write-model';
import { WorkerSession } from '../../../server/src/runtime/worker-session';
import { closeness, goldenConfig, goldenInputs } from '../../helpers/golden-bundles';
import { describeGolden, goldenPath } from '../../helpers/shared';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-onnx-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('float16 conversion', () => {
  test('exact values, rounding to nearest even, overflow and subnormals', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [65504, 0x7bff],
      [65520, 0x7c00], // halfway to the next binade: rounds up to Inf
      [65519, 0x7bff],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [1 + 2 ** -11, 0x3c00], // tie: to even (down)
      [1 + 3 * 2 ** -11, 0x3c02], // tie: to even (up)
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [1.5 * 2 ** -25, 0x0001],
      [2 ** -14, 0x0400],
      [2 ** -14 - 2 ** -25, 0x0400],
    ];
    for (const [x, bits] of cases) expect([x, floatToHalfBits(x).toString(16)]).toEqual([x, bits.toString(16)]);
    expect(floatToHalfBits(NaN) & 0x7c00).toBe(0x7c00);
    expect(floatToHalfBits(NaN) & 0x3ff).not.toBe(0);
  });

  test('round trip error is at most half an ulp', () => {
    let seed = 12345;
    for (let i = 0; i < 20000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const x = Math.fround(((seed / 2 ** 32) * 2 - 1) * 2 ** ((i % 30) - 15));
      const y = halfBitsToFloat(floatToHalfBits(x));
      const ax = Math.abs(x);
      const ulp = ax < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(ax)) - 10);
      expect(Math.abs(x - y)).toBeLessThanOrEqual(ulp / 2);
    }
  });
});

describe('graph builder', () => {
  test('writes inline and external initializers and a graph onnxruntime runs', async () => {
    const dataPath = path.join(tmp, 'affine.onnx.data');
    const writer = new ExternalDataWriter(dataPath);
    const b = new GraphBuilder('affine', {
      half: false,
      external: { writer, location: 'affine.onnx.data', thresholdBytes: 64 },
    });
    const x = b.input('x', DataType.FLOAT, ['n', 4]);
    const w = Float32Array.from({ length: 12 }, (_, i) => i - 5); // 48 bytes: inline
    const big = Float32Array.from({ length: 3 * 40 }, (_, i) => (i % 7) / 7); // 480 bytes: external
    const y = b.op('MatMul', [x, b.weight('w', w, [4, 3])]);
    const z = b.op('MatMul', [y, b.weight('big', big, [3, 40])]);
    const s = b.op('ReduceSum', [z, b.constI64([1])], { keepdims: attr.int(0) });
    b.output(s, 'sum', DataType.FLOAT, ['n']);
    const data = writer.close();
    const bytes = encodeModel(b.build({ producerVersion: 'test' }));
    const file = path.join(tmp, 'affine.onnx');
    fs.writeFileSync(file, bytes);

    expect(data.bytes).toBe(480);
    const decoded = decodeModel(bytes);
    expect(decoded.opsetImport).toEqual([{ domain: '', version: ONNX_OPSET }]);
    const ext = decoded.graph.initializer.find((t) => t.name === 'big')!;
    expect(ext.dataLocation).toBe(1);
    expect(ext.externalData).toEqual([
      { key: 'location', value: 'affine.onnx.data' },
      { key: 'offset', value: '0' },
      { key: 'length', value: '480' },
    ]);
    expect(decoded.graph.initializer.find((t) => t.name === 'w')!.rawData!.byteLength).toBe(48);
    expect(readOnnxSignature(file)).toMatchObject({
      inputs: [{ name: 'x', dtype: 'float32', shape: ['n', 4] }],
      outputs: [{ name: 'sum', dtype: 'float32', shape: ['n'] }],
      externalLocations: ['affine.onnx.data'],
    });

    const session = await WorkerSession.create(
      { modelPath: file, providers: ['cpu'], graphOptimizationLevel: 'all', intraOpThreads: 1 },
      'affine',
    );
    try {
      const input = Float32Array.of(1, 2, 3, 4, -1, 0, 0.5, 2);
      const out = new Float32Array(
        (await session.run({ x: { type: 'float32', data: input.slice().buffer, dims: [2, 4] } }, ['sum'])).sum.data,
      );
      const expected = [0, 1].map((r) => {
        let total = 0;
        for (let j = 0; j < 40; j++) {
          for (let k = 0; k < 3; k++) {
            let yk = 0;
            for (let i = 0; i < 4; i++) yk += input[r * 4 + i] * w[i * 3 + k];
            total += yk * big[k * 40 + j];
          }
        }
        return total;
      });
      expect(closeness(out, expected, 1e-4, 1e-6).ratio).toBeLessThanOrEqual(1);
    } finally {
      await session.close();
    }
  });

  test('external tensors are page aligned and fp16 halves them', () => {
    const writer = new ExternalDataWriter(path.join(tmp, 'aligned.data'));
    const a = writer.writeFloats(new Float32Array(10), false);
    const h = writer.writeFloats(Float32Array.of(1, -2, 65504), true);
    expect(a).toEqual({ offset: 0, length: 40 });
    expect(h).toEqual({ offset: EXTERNAL_DATA_ALIGNMENT, length: 6 });
    const { bytes } = writer.close();
    const raw = fs.readFileSync(path.join(tmp, 'aligned.data'));
    expect(bytes).toBe(raw.length);
    expect(
      Array.from(new Uint16Array(raw.buffer.slice(raw.byteOffset + h.offset, raw.byteOffset + h.offset + 6))),
    ).toEqual([0x3c00, 0xc000, 0x7bff]);
  });

  test('duplicate value names are rejected', () => {
    const b = new GraphBuilder('dup', { half: false });
    b.input('x', DataType.FLOAT, [1]);
    expect(() => b.input('x', DataType.FLOAT, [1])).toThrow(/duplicate graph value name x/);
    expect(() => b.weight('x', new Float32Array(1), [1])).toThrow(/duplicate/);
  });
});

describeGolden('attention formulations', () => {
  test("onnxruntime's contrib Attention / MultiHeadAttention and the plain MatMul/Softmax graph agree (1e-5)", async () => {
    const cfg = goldenConfig('tiny-gelu').model_cfg;
    const sd = await readSafetensors(goldenPath('model', 'tiny-gelu', 'open_clip_model.safetensors'));
    const weights = (k: string) => sd.get(k)!;
    const inp = goldenInputs('tiny-gelu');
    const results: Float32Array[][] = [];
    for (const attention of ['plain', 'contrib', 'mha'] as const) {
      const dir = path.join(tmp, attention);
      fs.mkdirSync(dir);
      const run = async (
        tower: 'visual' | 'textual',
        feeds: Parameters<WorkerSession['run']>[0],
        out: string,
      ): Promise<Float32Array> => {
        const file = path.join(dir, `${tower}.onnx`);
        writeTowerModel({
          onnxPath: file,
          tower,
          config: cfg,
          weights,
          precision: 'fp32',
          producerVersion: 'test',
          towerOptions: { attention, patchEmbed: attention === 'plain' ? 'conv' : 'matmul' },
        });
        const s = await WorkerSession.create(
          { modelPath: file, providers: ['cpu'], graphOptimizationLevel: 'all', intraOpThreads: 1 },
          tower,
        );
        try {
          return new Float32Array((await s.run(feeds, [out]))[out].data);
        } finally {
          await s.close();
        }
      };
      results.push([
        await run(
          'visual',
          { pixel_values: { type: 'float32', data: inp.images.slice().buffer, dims: [inp.nImages, 3, 64, 64] } },
          'image_embeds',
        ),
        await run(
          'textual',
          { input_ids: { type: 'int64', data: BigInt64Array.from(inp.ids, BigInt).buffer, dims: [inp.nTexts, 77] } },
          'text_embeds',
        ),
      ]);
    }
    for (const other of results.slice(1)) {
      expect(closeness(results[0][0], other[0], 1e-5, 0).ratio).toBeLessThanOrEqual(1);
      expect(closeness(results[0][1], other[1], 1e-5, 0).ratio).toBeLessThanOrEqual(1);
    }
  });
});
