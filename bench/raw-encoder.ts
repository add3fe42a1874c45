/**
 * The limit the server is judged against: raw onnxruntime-node `session.run` on the bundle's
 * towers, in this process, with the same execution provider, graph optimisation level and
 * intra-op threads as the server's sessions (server/src/runtime/session-worker.ts), per batch
 * size. Texts run twice: cut to the batch's longest EOT (what the server runs), over batches
 * drawn from the bench captions like the server's, and at all 77 positions (the usual export's
 * input), and the two outputs are compared.
 */
import * as ort from 'onnxruntime-node';
import type { Bundle } from '../server/src/model/bundle';
import { IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUT, TEXT_OUTPUT } from '../server/src/onnx/clip-graph';
import { cutTextBatch } from '../server/src/runtime/model';
import { RUNTIME_SESSION_EXTRA } from '../server/src/runtime/session-options';
import { ClipTokenizer } from '../server/src/tokenizer';
import { summarize, type LatencySummary } from './stats';

export type BenchProvider = 'cpu' | 'cuda';

export interface RawOptions {
  provider: BenchProvider;
  intraOpThreads: number;
  batchSizes: readonly number[];
  /** Timed runs continue until both this many seconds and `minRuns` runs have passed. */
  seconds: number;
  minRuns: number;
  captions: readonly string[];
}

export interface RawResult {
  tower: 'image' | 'text';
  /** texts: 'cut' = positions up to the longest EOT of the batch; 'full77' = every position */
  variant: 'pixels' | 'cut' | 'full77';
  batch: number;
  /** sequence positions run (texts; for cut runs the mean over the batches timed) */
  positions?: number;
  runs: number;
  itemsPerSec: number;
  latency: LatencySummary;
}

export interface TextEquality {
  batch: number;
  /** mean over the compared batches */
  positions: number;
  /** batches whose outputs were compared */
  windows: number;
  maxAbsDiff: number;
  bitwiseEqual: boolean;
}

export function sessionOptions(provider: BenchProvider, intraOpThreads: number): ort.InferenceSession.SessionOptions {
  // Mirrors server/src/runtime/session-worker.ts so the limit and the server run the same graph.
  // CUDA alone (onnxruntime still places unsupported nodes on the CPU): a CUDA provider that
  // fails to load must fail the bench, not measure the CPU under a GPU label.
  return {
    executionProviders: provider === 'cuda' ? [{ name: 'cuda' }] : ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: intraOpThreads,
    executionMode: 'sequential',
    ...RUNTIME_SESSION_EXTRA,
  };
}

async function timeRuns(run: () => Promise<unknown>, seconds: number, minRuns: number): Promise<number[]> {
  await run(); // first run: lazy allocations, kernel selection
  await run();
  const samples: number[] = [];
  const t0 = performance.now();
  while (samples.length < minRuns || performance.now() - t0 < seconds * 1000) {
    const s = performance.now();
    await run();
    samples.push(performance.now() - s);
  }
  return samples;
}

function result(
  tower: RawResult['tower'],
  variant: RawResult['variant'],
  batch: number,
  samples: number[],
  positions?: number,
): RawResult {
  const latency = summarize(samples);
  return {
    tower,
    variant,
    batch,
    ...(positions ? { positions } : {}),
    runs: samples.length,
    itemsPerSec: (batch * 1000) / latency.meanMs,
    latency,
  };
}

/** Deterministic pixel values in the normalised range the preprocessing produces. */
export function pixels(n: number, size: number): Float32Array {
  const out = new Float32Array(n * 3 * size * size);
  for (let i = 0; i < out.length; i++) out[i] = Math.sin(i * 0.37) * 1.8;
  return out;
}

export async function rawImageBench(bundle: Bundle, o: RawOptions, log: (m: string) => void): Promise<RawResult[]> {
  const session = await ort.InferenceSession.create(bundle.paths.visual, sessionOptions(o.provider, o.intraOpThreads));
  const size = bundle.manifest.image_size;
  const out: RawResult[] = [];
  try {
    for (const n of o.batchSizes) {
      const feed = { [IMAGE_INPUT]: new ort.Tensor('float32', pixels(n, size), [n, 3, size, size]) };
      const samples = await timeRuns(() => session.run(feed, [IMAGE_OUTPUT]), o.seconds, o.minRuns);
      const r = result('image', 'pixels', n, samples);
      log(`  raw image b${n}: ${r.itemsPerSec.toFixed(1)}/s, p50 ${r.latency.p50Ms.toFixed(2)} ms`);
      out.push(r);
    }
  } finally {
    await session.release();
  }
  return out;
}

export interface RawTextResults {
  results: RawResult[];
  equality: TextEquality[];
  /** mean tokens (with SOT and EOT) of the captions used */
  meanTokens: number;
  maxTokens: number;
}

/**
 * Batches of the limit's cut runs: consecutive windows of the captions, as many as RAW_TEXT_WINDOWS.
 * The server batches whichever captions arrive together, so its runs are as long as each batch's
 * longest caption; timing one fixed batch would make the limit depend on which captions happen
 * to come first.
 */
const RAW_TEXT_WINDOWS = 16;
/** Windows whose cut output is compared with the full 77-position run (those cost the most). */
const EQUALITY_WINDOWS = 4;

export async function rawTextBench(bundle: Bundle, o: RawOptions, log: (m: string) => void): Promise<RawTextResults> {
  const tokenizer = ClipTokenizer.fromMergesFile(bundle.paths.vocab);
  const ctx = bundle.manifest.context_length;
  const session = await ort.InferenceSession.create(bundle.paths.textual, sessionOptions(o.provider, o.intraOpThreads));
  const results: RawResult[] = [];
  const equality: TextEquality[] = [];
  const tokenized = tokenizer.tokenizeBatch([...o.captions], ctx);
  let tokens = 0;
  let maxTokens = 0;
  for (const e of tokenized.eotIndex) {
    tokens += e + 1;
    maxTokens = Math.max(maxTokens, e + 1);
  }
  const windowIds = (n: number, w: number): Int32Array => {
    const ids = new Int32Array(n * ctx);
    for (let r = 0; r < n; r++) {
      const c = (w * n + r) % o.captions.length;
      ids.set(tokenized.ids.subarray(c * ctx, (c + 1) * ctx), r * ctx);
    }
    return ids;
  };
  try {
    for (const n of o.batchSizes) {
      const windows = Array.from({ length: Math.min(RAW_TEXT_WINDOWS, Math.ceil(o.captions.length / n)) }, (_, w) =>
        windowIds(n, w),
      );
      const cutFeeds = windows.map((ids) => {
        const cut = cutTextBatch(ids, n, ctx, tokenizer.vocabSize);
        return { positions: cut.length, feed: { [TEXT_INPUT]: new ort.Tensor('int64', cut.ids, [n, cut.length]) } };
      });
      const fullFeeds = windows.map((ids) => ({
        [TEXT_INPUT]: new ort.Tensor(
          'int64',
          BigInt64Array.from(ids, (v) => BigInt(v)),
          [n, ctx],
        ),
      }));
      let maxAbsDiff = 0;
      let bitwiseEqual = true;
      for (let w = 0; w < Math.min(EQUALITY_WINDOWS, windows.length); w++) {
        const a = (await session.run(cutFeeds[w].feed, [TEXT_OUTPUT]))[TEXT_OUTPUT].data as Float32Array;
        const b = (await session.run(fullFeeds[w], [TEXT_OUTPUT]))[TEXT_OUTPUT].data as Float32Array;
        if (a.length !== b.length) bitwiseEqual = false;
        for (let i = 0; i < a.length; i++) {
          maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[i] - b[i]));
          if (!Object.is(a[i], b[i])) bitwiseEqual = false;
        }
      }
      const positions = cutFeeds.reduce((sum, f) => sum + f.positions, 0) / cutFeeds.length;
      equality.push({
        batch: n,
        positions,
        windows: Math.min(EQUALITY_WINDOWS, windows.length),
        maxAbsDiff,
        bitwiseEqual,
      });
      // Each timed run takes the next window; the full run costs the same whatever the captions.
      let next = 0;
      const rc = result(
        'text',
        'cut',
        n,
        await timeRuns(() => session.run(cutFeeds[next++ % cutFeeds.length].feed, [TEXT_OUTPUT]), o.seconds, o.minRuns),
        positions,
      );
      const rf = result(
        'text',
        'full77',
        n,
        await timeRuns(() => session.run(fullFeeds[0], [TEXT_OUTPUT]), o.seconds, o.minRuns),
        ctx,
      );
      log(
        `  raw text b${n}: cut to ${positions.toFixed(1)} (mean of ${cutFeeds.length} batches) ${rc.itemsPerSec.toFixed(1)}/s, full ${ctx} ${rf.itemsPerSec.toFixed(1)}/s (${(rc.itemsPerSec / rf.itemsPerSec).toFixed(2)}x), max |diff| ${maxAbsDiff}`,
      );
      results.push(rc, rf);
    }
  } finally {
    await session.release();
  }
  return { results, equality, meanTokens: tokens / o.captions.length, maxTokens };
}
