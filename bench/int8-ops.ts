/**
 * Which onnxruntime int8 kernels to build the int8 projections from, measured on one ViT-L/14 MLP
 * projection (x [rows, 1024] @ W [1024, 4096], rows = 257 tokens × batch) in one process,
 * alternating the variants round by round so that a shared CPU slows them alike:
 *
 *   node dist-bench/bench/int8-ops.js [--batch 1,8] [--rounds 5] [--k 1024] [--n 4096]
 *
 *   fp32      MatMul
 *   row       per-token scale + QuantizeLinear + MatMulInteger (u8×s8) + per-row/per-column rescale
 *             (what clipserve builds: onnxruntime's MatMulInteger takes no per-row zero point)
 *   row-mitf  the same per-token quantization, then com.microsoft MatMulIntegerToFloat with the
 *             per-column weight scales (one fused epilogue) and a Mul by the per-row scales
 *   axis      per-token scales as in row, but one QuantizeLinear with per-axis (per-row) scales and
 *             zero points instead of Div + QuantizeLinear (one pass over x instead of two)
 *   axis-mitf axis, then MatMulIntegerToFloat + Mul by the per-row scales
 *   dql       DynamicQuantizeLinear (one scale for the whole tensor) + MatMulInteger + rescale
 *   dqmm      com.microsoft DynamicQuantizeMatMul (one activation scale per tensor, per-column weights)
 *
 * Prints rows/s per variant and the relative RMS error of each int8 variant to fp32 on inputs
 * with a few outlier channels (×30), the case that separates per-token from per-tensor scales.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { Rng } from '../server/src/model/random-init';
import { attr, GraphBuilder, MS_DOMAIN } from '../server/src/onnx/graph-builder';
import { DataType, encodeModel } from '../server/src/onnx/proto';
import { quantizePerColumn } from '../server/src/onnx/quantize';
import { RUNTIME_SESSION_EXTRA } from '../server/src/runtime/session-options';

type Variant = 'fp32' | 'row' | 'row-mitf' | 'axis' | 'axis-mitf' | 'dql' | 'dqmm';
const VARIANTS: Variant[] = ['fp32', 'row', 'row-mitf', 'axis', 'axis-mitf', 'dql', 'dqmm'];

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

function buildModel(variant: Variant, w: Float32Array, K: number, N: number): Uint8Array {
  const b = new GraphBuilder(`int8_${variant}`, { half: false });
  const x = b.input('x', DataType.FLOAT, ['rows', K]);
  const q = quantizePerColumn(w, K, N);
  const f = (v: number): string => b.constF32('c', Float32Array.of(v), []);
  let y: string;
  if (variant === 'fp32') {
    y = b.op('MatMul', [x, b.exactWeight('w', w, [K, N])]);
  } else if (variant === 'row') {
    const zero = b.constU8([128], []);
    const s = b.op('Div', [
      b.op('Max', [b.op('ReduceMax', [b.op('Abs', [x])], { axes: attr.ints([-1]), keepdims: attr.int(1) }), f(1e-30)]),
      f(127),
    ]);
    const xq = b.op('QuantizeLinear', [b.op('Div', [x, s]), f(1), zero]);
    const acc = b.op('MatMulInteger', [xq, b.exactWeight('wq', q.values, [K, N]), zero]);
    y = b.op('Mul', [
      b.op('Mul', [b.op('Cast', [acc], { to: attr.int(DataType.FLOAT) }), s]),
      b.exactWeight('ws', q.scales, [N]),
    ]);
  } else if (variant === 'row-mitf') {
    const zero = b.constU8([128], []);
    const s = b.op('Div', [
      b.op('Max', [b.op('ReduceMax', [b.op('Abs', [x])], { axes: attr.ints([-1]), keepdims: attr.int(1) }), f(1e-30)]),
      f(127),
    ]);
    const xq = b.op('QuantizeLinear', [b.op('Div', [x, s]), f(1), zero]);
    const scaled = b.op(
      'MatMulIntegerToFloat',
      [xq, b.exactWeight('wq', q.values, [K, N]), f(1), b.exactWeight('ws', q.scales, [N]), zero],
      {},
      { domain: MS_DOMAIN },
    );
    y = b.op('Mul', [scaled, s]);
  } else if (variant === 'axis' || variant === 'axis-mitf') {
    const zero = b.constU8([128], []);
    const s = b.op('Div', [
      b.op('Max', [b.op('ReduceMax', [b.op('Abs', [x])], { axes: attr.ints([-1]), keepdims: attr.int(1) }), f(1e-30)]),
      f(127),
    ]);
    const s1 = b.op('Reshape', [s, b.constI64([-1])]);
    const zp1 = b.op('Expand', [b.constU8([128], [1]), b.op('Shape', [s1])]);
    const xq = b.op('QuantizeLinear', [x, s1, zp1], { axis: attr.int(0) });
    if (variant === 'axis') {
      const acc = b.op('MatMulInteger', [xq, b.exactWeight('wq', q.values, [K, N]), zero]);
      y = b.op('Mul', [
        b.op('Mul', [b.op('Cast', [acc], { to: attr.int(DataType.FLOAT) }), s]),
        b.exactWeight('ws', q.scales, [N]),
      ]);
    } else {
      y = b.op('Mul', [
        b.op(
          'MatMulIntegerToFloat',
          [xq, b.exactWeight('wq', q.values, [K, N]), f(1), b.exactWeight('ws', q.scales, [N]), zero],
          {},
          { domain: MS_DOMAIN },
        ),
        s,
      ]);
    }
  } else if (variant === 'dql') {
    const [xq, s, zp] = b.node('DynamicQuantizeLinear', [x], {}, { outputs: 3 });
    const acc = b.op('MatMulInteger', [xq, b.exactWeight('wq', q.values, [K, N]), zp]);
    y = b.op('Mul', [
      b.op('Mul', [b.op('Cast', [acc], { to: attr.int(DataType.FLOAT) }), s]),
      b.exactWeight('ws', q.scales, [N]),
    ]);
  } else {
    y = b.op(
      'DynamicQuantizeMatMul',
      [x, b.exactWeight('wq', q.values, [K, N]), b.exactWeight('ws', q.scales, [N])],
      {},
      { domain: MS_DOMAIN },
    );
  }
  b.output(y, 'y', DataType.FLOAT, ['rows', N]);
  return encodeModel(b.build({ producerVersion: 'bench' }));
}

function relErr(a: Float32Array, ref: Float32Array): number {
  let e = 0;
  let r = 0;
  for (let i = 0; i < a.length; i++) {
    e += (a[i] - ref[i]) ** 2;
    r += ref[i] ** 2;
  }
  return Math.sqrt(e / r);
}

async function main(): Promise<void> {
  const K = Number(arg('k', '1024'));
  const N = Number(arg('n', '4096'));
  const batches = arg('batch', '1,8').split(',').map(Number);
  const rounds = Number(arg('rounds', '5'));
  const rng = new Rng(7, 'int8-ops');
  const w = Float32Array.from({ length: K * N }, () => rng.normal() / Math.sqrt(K));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-ops-'));
  const sessions = new Map<Variant, ort.InferenceSession>();
  try {
    for (const v of VARIANTS) {
      const file = path.join(scratch, `${v}.onnx`);
      fs.writeFileSync(file, buildModel(v, w, K, N));
      try {
        sessions.set(
          v,
          await ort.InferenceSession.create(file, {
            executionProviders: ['cpu'],
            graphOptimizationLevel: 'all',
            ...RUNTIME_SESSION_EXTRA,
          }),
        );
      } catch (err) {
        process.stdout.write(`${v}: onnxruntime refused the graph: ${(err as Error).message.split('\n')[0]}\n`);
      }
    }
    for (const batch of batches) {
      const rows = 257 * batch;
      // Activations like a LayerNorm output with three outlier channels (gain ×30).
      const x = Float32Array.from(
        { length: rows * K },
        (_, i) => rng.normal() * ([5, 100, 700].includes(i % K) ? 30 : 1),
      );
      const feed = { x: new ort.Tensor('float32', x, [rows, K]) };
      const ref = (await sessions.get('fp32')!.run(feed)).y.data as Float32Array;
      const secs = new Map<Variant, number[]>();
      const errs = new Map<Variant, number>();
      for (const [v, s] of sessions) {
        const out = (await s.run(feed)).y.data as Float32Array; // warm-up, and the accuracy check
        errs.set(v, relErr(out, ref));
        secs.set(v, []);
      }
      for (let r = 0; r < rounds; r++) {
        for (const [v, s] of sessions) {
          const t0 = process.hrtime.bigint();
          await s.run(feed);
          secs.get(v)!.push(Number(process.hrtime.bigint() - t0) / 1e9);
        }
      }
      for (const [v, t] of secs) {
        const median = [...t].sort((a, b) => a - b)[Math.floor(t.length / 2)];
        const gflops = (2 * rows * K * N) / median / 1e9;
        process.stdout.write(
          JSON.stringify({
            batch,
            rows,
            variant: v,
            median_ms: +(median * 1e3).toFixed(1),
            gop_per_s: +gflops.toFixed(0),
            rel_rms_err_outliers: +errs.get(v)!.toFixed(4),
          }) + '\n',
        );
      }
    }
  } finally {
    for (const s of sessions.values()) await s.release();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
