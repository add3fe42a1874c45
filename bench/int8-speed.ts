/**
 * int8 against fp32, side by side in one run (`npm run bench:int8`):
 *
 *   node dist-bench/bench/int8-speed.js [--arch ViT-L-14] [--rounds 3] [--threads N] [--cache-dir DIR]
 *        [--calibration-samples 64] [--sections raw,memory]
 *
 *   raw     onnxruntime sessions of both bundles in this process, with the server's session
 *           options; image batches 1 and 8, text batches 1 and 16 of bench captions cut to their
 *           longest EOT. The two precisions alternate round by round (each round times every
 *           case once per precision), so a CPU shared with other work slows both alike; the
 *           figure per case is the median over rounds.
 *   memory  `clipserve serve` on each bundle in turn: resident memory once it is ready (model
 *           loaded and warmed up) and its peak.
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
import { IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUT, TEXT_OUTPUT } from '../server/src/onnx/clip-graph';
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
  await writeRandomBundle({ arch, seed: 1, outDir: dir, name: `bench-${arch}`, precision: 'int8', int8Settings: { samples } });
  return loadBundle(dir, { verify: false });
}

interface Case {
  name: string;
  tower: 'visual' | 'textual';
  batch: number;
  feed: (b: Bundle, tok: ClipTokenizer) => Record<string, ort.Tensor>;
}

const imageCase = (batch: number): Case => ({
  name: `image b${batch}`, tower: 'visual', batch,
  feed: (b) => ({ [IMAGE_INPUT]: new ort.Tensor('float32', pixels(batch, b.manifest.image_size), [batch, 3, b.manifest.image_size, b.manifest.image_size]) }),
});

const textCase = (batch: number): Case => ({
  name: `text b${batch}`, tower: 'textual', batch,
  feed: (b, tok) => {
    const ctx = b.manifest.context_length;
    const { ids, length } = cutTextBatch(tok.tokenizeBatch(benchCaptions(batch), ctx).ids, batch, ctx, tok.vocabSize);
    return { [TEXT_INPUT]: new ort.Tensor('int64', ids, [batch, length]) };
  },
});

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function raw(bundles: Record<'fp32' | 'int8', Bundle>, rounds: number, threads: number): Promise<void> {
  const cases = [imageCase(1), imageCase(8), textCase(1), textCase(16)];
  for (const tower of ['visual', 'textual'] as const) {
    const sessions: Record<string, ort.InferenceSession> = {};
    const toks: Record<string, ClipTokenizer> = {};
    try {
      for (const p of ['fp32', 'int8'] as const) {
        sessions[p] = await ort.InferenceSession.create(bundles[p].paths[tower], sessionOptions('cpu', threads));
        toks[p] = ClipTokenizer.fromMergesFile(bundles[p].paths.vocab);
      }
      for (const c of cases.filter((k) => k.tower === tower)) {
        const out = tower === 'visual' ? IMAGE_OUTPUT : TEXT_OUTPUT;
        const feeds = { fp32: c.feed(bundles.fp32, toks.fp32), int8: c.feed(bundles.int8, toks.int8) };
        for (const p of ['fp32', 'int8'] as const) await sessions[p].run(feeds[p], [out]); // warm-up
        const ms: Record<string, number[]> = { fp32: [], int8: [] };
        for (let r = 0; r < rounds; r++) {
          for (const p of ['fp32', 'int8'] as const) {
            const t0 = performance.now();
            await sessions[p].run(feeds[p], [out]);
            ms[p].push(performance.now() - t0);
          }
        }
        const perSec = (p: string) => (c.batch * 1000) / median(ms[p]);
        const ratio = perSec('int8') / perSec('fp32');
        process.stdout.write(JSON.stringify({ section: 'raw', case: c.name, rounds, fp32_per_s: +perSec('fp32').toFixed(2), int8_per_s: +perSec('int8').toFixed(2), int8_speedup: +ratio.toFixed(2), fp32_ms: ms.fp32.map((v) => Math.round(v)), int8_ms: ms.int8.map((v) => Math.round(v)) }) + '\n');
      }
    } finally {
      for (const s of Object.values(sessions)) await s.release();
    }
  }
}

async function memory(bundles: Record<'fp32' | 'int8', Bundle>, threads: number): Promise<void> {
  const rss: Record<string, { ready: number; peak: number }> = {};
  for (const p of ['fp32', 'int8'] as const) {
    const server = await ServerProcess.start({ model: bundles[p].dir, provider: 'cpu', intraOpThreads: threads, maxBatchSize: 8, preprocessWorkers: 1 });
    try {
      rss[p] = { ready: server.rssBytes(), peak: server.peakRssBytes() };
    } finally {
      await server.stop();
    }
  }
  process.stdout.write(JSON.stringify({
    section: 'memory', note: 'serve, ready (loaded and warmed up); each server alone',
    fp32_rss_mib: Math.round(rss.fp32.ready / MiB), int8_rss_mib: Math.round(rss.int8.ready / MiB), rss_ratio: +(rss.int8.ready / rss.fp32.ready).toFixed(3),
    fp32_peak_mib: Math.round(rss.fp32.peak / MiB), int8_peak_mib: Math.round(rss.int8.peak / MiB), peak_ratio: +(rss.int8.peak / rss.fp32.peak).toFixed(3),
  }) + '\n');
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
  process.stdout.write(JSON.stringify({ arch, threads, load_average: os.loadavg().map((v) => +v.toFixed(2)), int8_layers: { visual: `${t.visual.int8_layers.length}/${t.visual.int8_layers.length + t.visual.fp32_layers.length}`, textual: `${t.textual.int8_layers.length}/${t.textual.int8_layers.length + t.textual.fp32_layers.length}` } }) + '\n');
  const bundles = { fp32, int8 };
  if (sections.includes('raw')) await raw(bundles, rounds, threads);
  if (sections.includes('memory')) await memory(bundles, threads);
  process.stdout.write(JSON.stringify({ load_average_after: os.loadavg().map((v) => +v.toFixed(2)) }) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:int8: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
