/**
 * `clipserve bench` / `npm run bench`: builds or reuses random-weight bench bundles, then measures
 *   raw    – onnxruntime session.run per tower and batch size: the limit;
 *   server – the real server over loopback gRPC, driven by the SDK from another process, with
 *            dynamic batching on and off, across a concurrency sweep;
 *   hot    – tokenizer, image preprocessing and response encoding alone;
 * and prints a table per section, the targets with their verdicts, and writes
 * bench/results/<date>-<host>.json plus an SVG chart of throughput and p99 against concurrency.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ArchName } from '../server/src/model/config';
import { ClipTokenizer } from '../server/src/tokenizer';
import { SERVE_OPTIONS } from '../server/src/serve/config';
import { PACKAGE_ROOT } from '../server/src/util/paths';
import { BenchConfigError, ensureBenchBundle, weightBytes } from './bundles';
import { preprocessThroughput, responseEncoding, tokenizerThroughput, type ResponseEncodingResult } from './hot-paths';
import { benchCaptions, makeBenchImage, type BenchImageKind } from './inputs';
import { SDK_ENTRY } from './load-generator';
import { rawImageBench, rawTextBench, type BenchProvider } from './raw-encoder';
import { LoadGenerator, runServed, type ServedResult } from './server-bench';
import { ServerProcess } from './server-process';
import { renderChart, type Panel } from './svg-chart';
import { transportFloor } from './transport-floor';
import { evaluateTargets, markdownReport, printReport } from './report';
import type { BenchResults, ModelResults, Section } from './results';

export { SECTIONS } from './results';
export type { BenchResults, ModelResults, Section, TargetRow } from './results';

const SERVER_DEFAULT_MAX_BATCH = Number(SERVE_OPTIONS.find((opt) => opt.key === 'maxBatchSize')?.defaultValue ?? 32);

export interface BenchOptions {
  models: ArchName[];
  sections: Section[];
  quick: boolean;
  provider: BenchProvider;
  threads: number;
  cacheDir: string;
  outDir: string;
  /** Override: seconds per measurement (raw runs and each served scenario). */
  seconds?: number;
  /** Override: the concurrency sweep. */
  concurrency?: number[];
  /** Override: raw batch sizes. */
  batchSizes?: number[];
  /** The server's --max-batch-size with batching on (default: the server's own default). */
  serverMaxBatchSize?: number;
  /** The server's --max-queue-delay-ms (default: the server's own default). */
  maxQueueDelayMs?: number;
  log: (msg: string) => void;
}

interface Plan {
  imageBatchSizes: number[];
  textBatchSizes: number[];
  concurrency: number[];
  rawSeconds: number;
  warmupSeconds: number;
  seconds: number;
  /** concurrency of the stream and pipeline-overlap scenarios */
  streamWindow: number;
  /** also run the server with batching off, the streams and the large-image scenarios */
  full: boolean;
}

/**
 * Per-model durations and sweeps. ViT-L/14 runs at ~1 image/s on 2 cores: its plan measures the
 * anchors' batch sizes, start-up and memory, and single and 16-caller serving only.
 */
function planFor(arch: ArchName, o: BenchOptions): Plan {
  const large = arch === 'ViT-L-14';
  const p: Plan = large
    ? {
        imageBatchSizes: [1, 2],
        textBatchSizes: [1, 16],
        concurrency: [1, 8],
        rawSeconds: 5,
        warmupSeconds: 3,
        seconds: 10,
        streamWindow: 8,
        full: false,
      }
    : o.quick
      ? {
          imageBatchSizes: [1, 8, 32, 64],
          textBatchSizes: [1, 8, 32, 64],
          concurrency: [1, 8, 64],
          rawSeconds: 1,
          warmupSeconds: 0.5,
          seconds: 1.5,
          streamWindow: 64,
          full: true,
        }
      : {
          imageBatchSizes: [1, 8, 32, 64],
          textBatchSizes: [1, 8, 32, 64],
          concurrency: [1, 2, 4, 8, 16, 32, 64, 128, 256],
          rawSeconds: 3,
          warmupSeconds: 1,
          seconds: 3,
          streamWindow: 64,
          full: true,
        };
  if (o.batchSizes) {
    p.imageBatchSizes = o.batchSizes;
    p.textBatchSizes = o.batchSizes;
  }
  if (o.concurrency) p.concurrency = o.concurrency;
  if (o.seconds) {
    p.rawSeconds = o.seconds;
    p.seconds = o.seconds;
  }
  return p;
}

/**
 * Warm-up and window of one served scenario, stretched by what the raw limit predicts: the
 * window spans at least 5 batch runs (a 64-image ViT-B/32 batch takes ~2.5 s on 2 cores) and the
 * warm-up at least the time for every caller's first call to come back (closed loop: c / rate),
 * so latencies are steady-state ones. Without raw figures the plan's durations stand.
 */
const MAX_WARMUP_S = 20;
const MAX_WINDOW_S = 40;

function scenarioTiming(
  plan: Plan,
  raw: ModelResults['raw'],
  tower: 'image' | 'text',
  maxBatch: number,
  concurrency: number,
): { warmupSeconds: number; seconds: number } {
  const list = tower === 'image' ? raw?.image : raw?.text.results.filter((r) => r.variant === 'cut');
  const batch = Math.min(concurrency, maxBatch);
  const candidates = (list ?? []).filter((r) => r.batch <= batch);
  if (candidates.length === 0) return { warmupSeconds: plan.warmupSeconds, seconds: plan.seconds };
  const rate = Math.max(...candidates.map((r) => r.itemsPerSec));
  return {
    warmupSeconds: Math.min(MAX_WARMUP_S, Math.max(plan.warmupSeconds, (1.2 * concurrency) / rate)),
    seconds: Math.min(MAX_WINDOW_S, Math.max(plan.seconds, (5 * batch) / rate)),
  };
}

function onnxruntimeVersion(): string {
  try {
    return (
      JSON.parse(
        fs.readFileSync(path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'package.json'), 'utf8'),
      ) as { version: string }
    ).version;
  } catch {
    return 'unknown';
  }
}

async function benchModel(arch: ArchName, o: BenchOptions, captions: string[]): Promise<ModelResults> {
  const plan = planFor(arch, o);
  const { dir, bundle, built, buildSeconds } = await ensureBenchBundle(arch, o.cacheDir, o.log);
  const res: ModelResults = { bundle: { dir, weightBytes: weightBytes(bundle), built, buildSeconds } };
  const rawOpts = { provider: o.provider, intraOpThreads: o.threads, seconds: plan.rawSeconds, minRuns: 3, captions };

  if (o.sections.includes('raw')) {
    o.log(
      `${arch}: raw encoders (image batch ${plan.imageBatchSizes.join(', ')}; text batch ${plan.textBatchSizes.join(', ')})`,
    );
    res.raw = {
      image: await rawImageBench(bundle, { ...rawOpts, batchSizes: plan.imageBatchSizes }, o.log),
      text: await rawTextBench(bundle, { ...rawOpts, batchSizes: plan.textBatchSizes }, o.log),
    };
  }

  if (o.sections.includes('server')) {
    if (!fs.existsSync(SDK_ENTRY))
      throw new BenchConfigError(
        `the server section drives the SDK: build it first (npm run build -w @clipserve/sdk); ${SDK_ENTRY} is missing`,
      );
    // Batching on = the server as shipped: its default --max-batch-size (unless --server-max-batch-size).
    const maxBatchSize = o.serverMaxBatchSize ?? SERVER_DEFAULT_MAX_BATCH;
    const small = {
      label: `${bundle.manifest.image_size}px JPEG`,
      bytes: await makeBenchImage('small', bundle.manifest.image_size),
    };
    const served: ServedResult[] = [];
    const gen = await LoadGenerator.start();
    try {
      for (const batching of plan.full ? (['on', 'off'] as const) : (['on'] as const)) {
        o.log(
          `${arch}: server, dynamic batching ${batching}${batching === 'on' ? ` (--max-batch-size ${maxBatchSize})` : ' (--max-batch-size 1)'}`,
        );
        const server = await ServerProcess.start({
          model: dir,
          provider: o.provider,
          intraOpThreads: o.threads,
          maxBatchSize: batching === 'on' ? maxBatchSize : 1,
          ...(o.maxQueueDelayMs !== undefined ? { maxQueueDelayMs: o.maxQueueDelayMs } : {}),
        });
        try {
          if (batching === 'on')
            res.server = {
              maxBatchSize,
              readySeconds: server.readySeconds,
              readyPeakRssBytes: server.peakRssBytes(),
              served,
            };
          const run = async (spec: Parameters<typeof runServed>[3]): Promise<void> => {
            const timing = scenarioTiming(
              plan,
              res.raw,
              spec.kind.includes('image') ? 'image' : 'text',
              batching === 'on' ? maxBatchSize : 1,
              spec.concurrency,
            );
            const r = await runServed(server, gen, batching, spec, timing, captions);
            served.push(r);
            o.log(
              `  ${r.kind}${r.image ? ` (${r.image})` : ''} c=${r.concurrency}: ${r.itemsPerSec.toFixed(1)}/s p50 ${r.latency.p50Ms.toFixed(2)} ms p99 ${r.latency.p99Ms.toFixed(2)} ms cpu ${r.serverCpuCores.toFixed(2)}${r.errors ? ` errors ${r.errors} (${r.errorSamples?.[0]})` : ''}`,
            );
          };
          for (const c of plan.concurrency) await run({ kind: 'text', concurrency: c });
          for (const c of plan.concurrency) await run({ kind: 'image', concurrency: c, image: small });
          if (batching === 'on' && plan.full) {
            await run({ kind: 'stream-text', concurrency: plan.streamWindow });
            await run({ kind: 'stream-image', concurrency: plan.streamWindow, image: small });
            // Pipeline overlap: big inputs whose decode is a real share of the work.
            for (const kind of ['icon', 'photo'] as BenchImageKind[]) {
              const bytes = await makeBenchImage(kind, bundle.manifest.image_size);
              await run({
                kind: 'image',
                concurrency: plan.streamWindow,
                image: { label: kind === 'icon' ? '512px PNG icon' : '2000x1500 JPEG photo', bytes },
              });
            }
          }
        } finally {
          await server.stop();
        }
      }
    } finally {
      await gen.close();
    }
  }
  return res;
}

async function benchHot(o: BenchOptions, captions: string[]): Promise<NonNullable<BenchResults['hot']>> {
  o.log('hot paths: tokenizer, preprocessing, response encoding');
  const tokenizer = ClipTokenizer.fromMerges((await import('../server/src/tokenizer')).buildDemoVocab());
  const tok = tokenizerThroughput(tokenizer, o.quick ? captions.slice(0, 20_000) : captions);
  const { resolveConfig } = await import('../server/src/model/config');
  const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;
  const iterations = o.quick ? 5 : 20;
  const workers = os.availableParallelism();
  const preprocess = [
    await preprocessThroughput('512x512 RGBA PNG icon', await makeBenchImage('icon', 224), cfg, iterations, workers),
    await preprocessThroughput('2000x1500 JPEG photo', await makeBenchImage('photo', 224), cfg, iterations, workers),
  ];
  const encoding: ResponseEncodingResult[] = [];
  for (const dim of [512, 768]) {
    for (const batch of [1, 32]) {
      for (const format of ['EMBEDDING_FORMAT_F32LE_BYTES', 'EMBEDDING_FORMAT_FLOATS'] as const) {
        encoding.push(await responseEncoding(dim, batch, format, o.quick ? 200 : 2000));
      }
    }
  }
  return { tokenizer: tok, preprocess, responseEncoding: encoding };
}

function chartPanels(results: BenchResults): Panel[] {
  const panels: Panel[] = [];
  for (const [arch, m] of Object.entries(results.models)) {
    const served = m?.server?.served;
    if (!served) continue;
    const series = (metric: (r: ServedResult) => number): Panel['series'] =>
      (['text', 'image'] as const).flatMap((kind) =>
        (['on', 'off'] as const).map((batching) => ({
          label: `${kind}, batching ${batching}`,
          dashed: batching === 'off',
          points: served
            .filter(
              (r) =>
                r.kind === kind && r.batching === batching && (kind === 'text' || (r.image ?? '').endsWith('px JPEG')),
            )
            .map((r) => [r.concurrency, metric(r)] as [number, number]),
        })),
      );
    panels.push({ title: `${arch}: throughput`, yLabel: 'items/s', series: series((r) => r.itemsPerSec) });
    panels.push({
      title: `${arch}: p99 latency`,
      yLabel: 'p99 ms (log)',
      yLog: true,
      series: series((r) => r.latency.p99Ms),
    });
  }
  return panels;
}

export async function runBench(
  o: BenchOptions,
): Promise<{ results: BenchResults; jsonPath: string; chartPath?: string }> {
  const t0 = performance.now();
  const loadBefore = os.loadavg();
  if (loadBefore[0] > 1.5)
    o.log(`warning: 1-minute load average is ${loadBefore[0].toFixed(2)}: figures taken under load are not comparable`);
  const captions = benchCaptions(o.quick ? 2000 : 100_000);
  const results: BenchResults = {
    meta: {
      date: new Date().toISOString(),
      host: os.hostname(),
      node: process.version,
      onnxruntime: onnxruntimeVersion(),
      cpus: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryBytes: os.totalmem(),
      loadAverageBefore: loadBefore,
      loadAverageAfter: [],
      provider: o.provider,
      intraOpThreads: o.threads,
      quick: o.quick,
      sections: o.sections,
      wallSeconds: 0,
    },
    models: {},
    targets: [],
  };
  // The load-generated captions come from the same pool as the raw text limit's.
  const modelCaptions = captions.slice(0, 2000);
  if (o.sections.includes('server')) {
    results.transportFloor = await transportFloor(o.quick ? 500 : 2000);
    o.log(`transport floor (bare grpc-js unary, two processes): p50 ${results.transportFloor.p50Ms.toFixed(3)} ms`);
  }
  for (const arch of o.models) results.models[arch] = await benchModel(arch, o, modelCaptions);
  if (o.sections.includes('hot')) results.hot = await benchHot(o, captions);
  results.meta.loadAverageAfter = os.loadavg();
  results.meta.wallSeconds = (performance.now() - t0) / 1000;
  results.targets = evaluateTargets(results);

  fs.mkdirSync(o.outDir, { recursive: true });
  const stamp = results.meta.date.replace(/[:]/g, '-').replace(/\.\d+Z$/, 'Z');
  const base = path.join(o.outDir, `${stamp}-${results.meta.host.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  const jsonPath = `${base}.json`;
  fs.writeFileSync(jsonPath, JSON.stringify(results, null, 2) + '\n');
  fs.writeFileSync(`${base}.md`, markdownReport(results));
  let chartPath: string | undefined;
  const panels = chartPanels(results);
  if (panels.length) {
    chartPath = `${base}.svg`;
    fs.writeFileSync(
      chartPath,
      renderChart(
        `clipserve served throughput and p99 vs concurrency (${results.meta.provider}, ${results.meta.cpus} cores, ${results.meta.date.slice(0, 10)})`,
        panels,
      ),
    );
  }
  printReport(results, (s) => process.stdout.write(s));
  return { results, jsonPath, chartPath };
}

export function defaultBenchDirs(): { cacheDir: string; outDir: string } {
  return { cacheDir: path.join(PACKAGE_ROOT, '.cache', 'bench'), outDir: path.join(PACKAGE_ROOT, 'bench', 'results') };
}
