/**
 * int8 against fp32, side by side in one run (`npm run bench:int8`):
 *
 *   node dist-bench/bench/int8-speed.js [--arch ViT-L-14] [--rounds 3] [--threads N] [--cache-dir DIR]
 *        [--calibration-samples 64] [--sections raw,memory,profile] [--profile-batch 8]
 *        [--int8-kernels to-float] [--cases image-b1,image-b8,text-b1,text-b16]
 *
 *   raw     onnxruntime sessions of both bundles in this process, with the server's session
 *           options; image batches 1 and 8, text batches 1 and 16 of bench captions cut to their
 *           longest EOT. The two precisions alternate round by round (each round times every
 *           case once per precision), so a CPU shared with other work slows both alike; the
 *           figure per case is the median over rounds.
 *           --int8-kernels to-float (comma list): the int8 bundle's towers also rewritten, from its
 *           own weights and layer choice, with that int8 GEMM formulation (../onnx/clip-graph
 *           `Int8Kernel`) and timed in the same alternation.
 *   memory  `clipserve serve` on each bundle in turn: resident memory once it is ready (model
 *           loaded and warmed up) and its peak.
 *   profile onnxruntime's profiler on each image tower at --profile-batch (default 8), --rounds
 *           runs after a first one: kernel time per operator type (all runs), summed, largest first (where the
 *           time goes; not in the default sections, profiling slows the run).
 *
 * Bundles: the bench's seeded random bundle of the arch (<cache>/<arch>, as `clipserve bench`
 * builds it) and an int8 conversion of the same weights beside it (<cache>/<arch>-int8).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadBundle, type Bundle } from '../server/src/model/bundle';
import { writeRandomBundle } from '../server/src/model/random-bundle';
import {
  IMAGE_INPUT,
  IMAGE_OUTPUT,
  INT8_KERNELS,
  TEXT_INPUT,
  TEXT_OUTPUT,
  type Int8Kernel,
} from '../server/src/onnx/clip-graph';
import { rewriteInt8Tower } from '../server/src/model/int8-rewrite';
import { cutTextBatch } from '../server/src/runtime/model';
import { ClipTokenizer } from '../server/src/tokenizer';
import { ensureBenchBundle, parseArch } from './bundles';
import { benchCaptions } from './inputs';
import { pixels, sessionOptions } from './raw-encoder';
import { defaultBenchDirs } from './run';
import { ServerProcess } from './server-process';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

const log = (m: string): void => void process.stderr.write(`${m}\n`);
const MiB = 2 ** 20;

async function int8Bundle(arch: ReturnType<typeof parseArch>, cacheDir: string, samples: number): Promise<Bundle> {
  const dir = path.resolve(cacheDir, `${arch}-int8`);
  if (fs.existsSync(dir)) {
    try {
      return await loadBundle(dir, { verify: false });
    } catch (err) {
      log(`cached int8 bundle ${dir} is unusable (${(err as Error).message}); rebuilding`);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  log(`converting the ${arch} bench weights to int8 (${samples} calibration samples) in ${dir}`);
  await writeRandomBundle({
    arch,
    seed: 1,
    outDir: dir,
    name: `bench-${arch}`,
    precision: 'int8',
    int8Settings: { samples },
  });
  return loadBundle(dir, { verify: false });
}

interface Case {
  name: string;
  tower: 'visual' | 'textual';
  batch: number;
  feed: (b: Bundle, tok: ClipTokenizer) => Record<string, ort.Tensor>;
}

const imageCase = (batch: number): Case => ({
  name: `image b${batch}`,
  tower: 'visual',
  batch,
  feed: (b) => ({
    [IMAGE_INPUT]: new ort.Tensor('float32', pixels(batch, b.manifest.image_size), [
      batch,
      3,
      b.manifest.image_size,
      b.manifest.image_size,
    ]),
  }),
});

const textCase = (batch: number): Case => ({
  name: `text b${batch}`,
  tower: 'textual',
  batch,
  feed: (b, tok) => {
    const ctx = b.manifest.context_length;
    const { ids, length } = cutTextBatch(tok.tokenizeBatch(benchCaptions(batch), ctx).ids, batch, ctx, tok.vocabSize);
    return { [TEXT_INPUT]: new ort.Tensor('int64', ids, [batch, length]) };
  },
});

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The int8 bundle's towers written again with another int8 GEMM formulation, into `dir`. */
function rewriteInt8(int8: Bundle, kernel: Int8Kernel, dir: string): Record<'visual' | 'textual', string> {
  const out = {} as Record<'visual' | 'textual', string>;
  for (const tower of ['visual', 'textual'] as const)
    rewriteInt8Tower(int8, tower, kernel, (out[tower] = path.join(dir, `${tower}-${kernel}.onnx`)));
  return out;
}

async function raw(
  bundles: Record<'fp32' | 'int8', Bundle>,
  rounds: number,
  threads: number,
  kernels: Int8Kernel[],
  only: string[],
): Promise<void> {
  const cases = [imageCase(1), imageCase(8), textCase(1), textCase(16)].filter(
    (c) => only.length === 0 || only.includes(c.name.replace(' ', '-')),
  );
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-kernels-'));
  const extra = Object.fromEntries(kernels.map((k) => [k, rewriteInt8(bundles.int8, k, scratch)]));
  // Every variant: its model file per tower; the rewritten ones take the int8 bundle's inputs.
  const variants: { name: string; bundle: Bundle; file: (t: 'visual' | 'textual') => string }[] = [
    { name: 'fp32', bundle: bundles.fp32, file: (t) => bundles.fp32.paths[t] },
    { name: 'int8', bundle: bundles.int8, file: (t) => bundles.int8.paths[t] },
    ...kernels.map((k) => ({
      name: `int8 ${k}`,
      bundle: bundles.int8,
      file: (t: 'visual' | 'textual') => extra[k][t],
    })),
  ];
  try {
    for (const tower of ['visual', 'textual'] as const) {
      const sessions: Record<string, ort.InferenceSession> = {};
      const tok = ClipTokenizer.fromMergesFile(bundles.fp32.paths.vocab);
      try {
        for (const v of variants)
          sessions[v.name] = await ort.InferenceSession.create(v.file(tower), sessionOptions('cpu', threads));
        for (const c of cases.filter((k) => k.tower === tower)) {
          const out = tower === 'visual' ? IMAGE_OUTPUT : TEXT_OUTPUT;
          const feeds = Object.fromEntries(variants.map((v) => [v.name, c.feed(v.bundle, tok)]));
          for (const v of variants) await sessions[v.name].run(feeds[v.name], [out]); // warm-up
          const ms: Record<string, number[]> = Object.fromEntries(variants.map((v) => [v.name, []]));
          for (let r = 0; r < rounds; r++) {
            for (const v of variants) {
              const t0 = performance.now();
              await sessions[v.name].run(feeds[v.name], [out]);
              ms[v.name].push(performance.now() - t0);
            }
          }
          const perSec = (p: string) => (c.batch * 1000) / median(ms[p]);
          const row: Record<string, unknown> = {
            section: 'raw',
            case: c.name,
            rounds,
            fp32_per_s: +perSec('fp32').toFixed(2),
            int8_per_s: +perSec('int8').toFixed(2),
            int8_speedup: +(perSec('int8') / perSec('fp32')).toFixed(2),
          };
          for (const k of kernels)
            Object.assign(row, {
              [`int8_${k}_per_s`]: +perSec(`int8 ${k}`).toFixed(2),
              [`int8_${k}_speedup`]: +(perSec(`int8 ${k}`) / perSec('fp32')).toFixed(2),
            });
          row.ms = Object.fromEntries(variants.map((v) => [v.name, ms[v.name].map((x) => Math.round(x))]));
          process.stdout.write(JSON.stringify(row) + '\n');
        }
      } finally {
        for (const s of Object.values(sessions)) await s.release();
      }
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

async function memory(bundles: Record<'fp32' | 'int8', Bundle>, threads: number): Promise<void> {
  const rss: Record<string, { ready: number; peak: number }> = {};
  for (const p of ['fp32', 'int8'] as const) {
    const server = await ServerProcess.start({
      model: bundles[p].dir,
      provider: 'cpu',
      intraOpThreads: threads,
      maxBatchSize: 8,
      preprocessWorkers: 1,
    });
    try {
      rss[p] = { ready: server.rssBytes(), peak: server.peakRssBytes() };
    } finally {
      await server.stop();
    }
  }
  process.stdout.write(
    JSON.stringify({
      section: 'memory',
      note: 'serve, ready (loaded and warmed up); each server alone',
      fp32_rss_mib: Math.round(rss.fp32.ready / MiB),
      int8_rss_mib: Math.round(rss.int8.ready / MiB),
      rss_ratio: +(rss.int8.ready / rss.fp32.ready).toFixed(3),
      fp32_peak_mib: Math.round(rss.fp32.peak / MiB),
      int8_peak_mib: Math.round(rss.int8.peak / MiB),
      peak_ratio: +(rss.int8.peak / rss.fp32.peak).toFixed(3),
    }) + '\n',
  );
}

/** Kernel time per operator type from an onnxruntime profile (Chrome trace JSON). */
function kernelTimeByOp(profileFile: string): Map<string, { us: number; calls: number }> {
  const events = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as {
    cat?: string;
    name?: string;
    dur?: number;
    args?: { op_name?: string };
  }[];
  const byOp = new Map<string, { us: number; calls: number }>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const o = byOp.get(e.args.op_name) ?? { us: 0, calls: 0 };
    o.us += e.dur ?? 0;
    o.calls += 1;
    byOp.set(e.args.op_name, o);
  }
  return byOp;
}

async function profile(
  bundles: Record<'fp32' | 'int8', Bundle>,
  rounds: number,
  threads: number,
  batch: number,
): Promise<void> {
  const c = imageCase(batch);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-int8-profile-'));
  try {
    for (const p of ['fp32', 'int8'] as const) {
      const feeds = c.feed(bundles[p], undefined as never);
      const profiled = await ort.InferenceSession.create(bundles[p].paths.visual, {
        ...sessionOptions('cpu', threads),
        enableProfiling: true,
        profileFilePrefix: path.join(dir, p),
      });
      const t0 = performance.now();
      await profiled.run(feeds, [IMAGE_OUTPUT]); // first run (allocations): in the profile, not in run_ms
      const firstMs = performance.now() - t0;
      const ms: number[] = [];
      for (let r = 0; r < rounds; r++) {
        const t = performance.now();
        await profiled.run(feeds, [IMAGE_OUTPUT]);
        ms.push(performance.now() - t);
      }
      profiled.endProfiling();
      await profiled.release();
      const file = fs.readdirSync(dir).find((f) => f.startsWith(p) && f.endsWith('.json'));
      if (!file) throw new Error(`onnxruntime wrote no profile for ${p}`);
      const byOp = [...kernelTimeByOp(path.join(dir, file))].sort((a, b) => b[1].us - a[1].us);
      const total = byOp.reduce((s, [, o]) => s + o.us, 0);
      process.stdout.write(
        JSON.stringify({
          section: 'profile',
          precision: p,
          case: c.name,
          runs: rounds + 1,
          first_run_ms: Math.round(firstMs),
          run_ms: ms.map(Math.round),
          kernel_ms_total: Math.round(total / 1000),
          by_op: byOp.map(([op, o]) => ({
            op,
            ms: Math.round(o.us / 1000),
            share: +(o.us / total).toFixed(3),
            calls: o.calls,
          })),
        }) + '\n',
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const arch = parseArch(arg('arch', 'ViT-L-14'));
  const cacheDir = arg('cache-dir', defaultBenchDirs().cacheDir);
  const rounds = Number(arg('rounds', '3'));
  const threads = Number(arg('threads', String(os.availableParallelism())));
  const sections = arg('sections', 'raw,memory').split(',');
  const fp32 = (await ensureBenchBundle(arch, cacheDir, log)).bundle;
  const int8 = await int8Bundle(arch, cacheDir, Number(arg('calibration-samples', '64')));
  const t = int8.manifest.int8!.towers;
  process.stdout.write(
    JSON.stringify({
      arch,
      threads,
      load_average: os.loadavg().map((v) => +v.toFixed(2)),
      int8_layers: {
        visual: `${t.visual.int8_layers.length}/${t.visual.int8_layers.length + t.visual.fp32_layers.length}`,
        textual: `${t.textual.int8_layers.length}/${t.textual.int8_layers.length + t.textual.fp32_layers.length}`,
      },
    }) + '\n',
  );
  const bundles = { fp32, int8 };
  const kernels = arg('int8-kernels', '').split(',').filter(Boolean);
  for (const k of kernels)
    if (!INT8_KERNELS.includes(k as Int8Kernel))
      throw new Error(`--int8-kernels: unknown ${k} (${INT8_KERNELS.join(', ')})`);
  if (sections.includes('raw'))
    await raw(bundles, rounds, threads, kernels as Int8Kernel[], arg('cases', '').split(',').filter(Boolean));
  if (sections.includes('memory')) await memory(bundles, threads);
  if (sections.includes('profile')) await profile(bundles, rounds, threads, Number(arg('profile-batch', '8')));
  process.stdout.write(JSON.stringify({ load_average_after: os.loadavg().map((v) => +v.toFixed(2)) }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:int8: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
