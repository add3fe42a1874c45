/**
 * The bench's own arithmetic and rendering (no models, no servers): percentiles, target verdicts
 * from a results object, tables and the SVG chart. The measurements themselves are `npm run bench`.
 */
import { BenchConfigError, parseArch } from '../../../bench/bundles';
import { completionRate } from '../../../bench/load-generator';
import { evaluateTargets, markdownReport } from '../../../bench/report';
import type { RawResult } from '../../../bench/raw-encoder';
import type { BenchResults } from '../../../bench/run';
import type { ServedResult } from '../../../bench/server-bench';
import { percentile, summarize } from '../../../bench/stats';
import { renderChart } from '../../../bench/svg-chart';
import { formatTable, markdownTable } from '../../../bench/table';

const lat = (p50: number) => ({
  count: 10,
  meanMs: p50,
  p50Ms: p50,
  p95Ms: p50 * 1.2,
  p99Ms: p50 * 1.5,
  maxMs: p50 * 2,
});
const raw = (tower: RawResult['tower'], variant: RawResult['variant'], batch: number, perSec: number): RawResult => ({
  tower,
  variant,
  batch,
  runs: 5,
  itemsPerSec: perSec,
  latency: lat((1000 * batch) / perSec),
});
const served = (
  kind: ServedResult['kind'],
  batching: 'on' | 'off',
  concurrency: number,
  perSec: number,
  p50: number,
  image?: string,
): ServedResult => ({
  kind,
  batching,
  concurrency,
  itemsPerSec: perSec,
  errors: 0,
  latency: lat(p50),
  serverCpuCores: 1.9,
  clientCpuCores: 0.2,
  serverPeakRssBytes: 1 << 30,
  ...(image ? { image } : {}),
  breakdown: { runs: 1, meanBatchSize: 1, meanInferenceMs: 1, meanPreprocessMs: 1, meanQueueWaitMs: 1 },
});

function results(): BenchResults {
  return {
    meta: {
      date: '2026-01-01T00:00:00Z',
      host: 'h',
      node: 'v20',
      onnxruntime: '1.30.0',
      cpus: 2,
      cpuModel: 'x',
      memoryBytes: 1,
      loadAverageBefore: [0.5],
      loadAverageAfter: [0.7],
      provider: 'cpu',
      intraOpThreads: 2,
      quick: false,
      sections: ['raw', 'server'],
      wallSeconds: 1,
    },
    models: {
      'ViT-B-32': {
        bundle: { dir: '/b', weightBytes: 500 << 20, built: false, buildSeconds: 0 },
        raw: {
          image: [raw('image', 'pixels', 1, 20), raw('image', 'pixels', 8, 30)],
          text: {
            results: [
              raw('text', 'cut', 1, 80),
              raw('text', 'full77', 1, 30),
              raw('text', 'cut', 32, 200),
              raw('text', 'full77', 32, 40),
            ],
            equality: [
              { batch: 1, positions: 14, windows: 4, maxAbsDiff: 0, bitwiseEqual: true },
              { batch: 32, positions: 15, windows: 4, maxAbsDiff: 1e-7, bitwiseEqual: false },
            ],
            meanTokens: 9.8,
            maxTokens: 23,
          },
        },
        server: {
          maxBatchSize: 32,
          readySeconds: 1.5,
          readyPeakRssBytes: 600 << 20,
          served: [
            served('text', 'on', 1, 70, 13.5),
            served('text', 'on', 64, 190, 300),
            served('text', 'off', 64, 80, 800),
            served('image', 'on', 1, 19, 53, '224px JPEG'),
            served('image', 'on', 64, 26, 2000, '224px JPEG'),
            served('image', 'off', 64, 18, 3000, '224px JPEG'),
          ],
        },
      },
    },
    targets: [],
  };
}

describe('bench arithmetic', () => {
  test('nearest-rank percentiles and summaries', () => {
    const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(sorted, 50)).toBe(50);
    expect(percentile(sorted, 99)).toBe(99);
    expect(percentile(sorted, 100)).toBe(100);
    expect(percentile([], 50)).toBeNaN();
    const s = summarize([5, 1, 4, 2, 3]);
    expect(s).toMatchObject({ count: 5, meanMs: 3, p50Ms: 3, maxMs: 5 });
  });

  test('completion rate: bursts of one batch do not move the figure by a whole batch', () => {
    // 30 responses per batch, one batch a second, spread over `spread` ms.
    const bursts = (n: number, offset: number, spread = 3) =>
      Array.from({ length: n * 30 }, (_, i) => offset + Math.floor(i / 30) * 1000 + ((i % 30) * spread) / 30);
    // A 5 s window holding 4 or 5 bursts: per-window counting says 24/s or 30/s.
    expect(completionRate(bursts(4, 900), 5)).toBeCloseTo(30, 0);
    expect(completionRate(bursts(5, 100), 5)).toBeCloseTo(30, 0);
    // Responses of one batch trickling in over 60 ms do not count as a batch of their own.
    expect(completionRate(bursts(4, 900, 60), 5)).toBeCloseTo(30, 0);
    // Evenly spaced completions: one every 10 ms.
    expect(
      completionRate(
        Array.from({ length: 300 }, (_, i) => i * 10),
        3,
      ),
    ).toBeCloseTo(100, 5);
    // One burst, or too few completions to span anything: the plain count.
    expect(completionRate(bursts(1, 2000), 5)).toBe(6);
    expect(completionRate([5], 2)).toBe(0.5);
    expect(completionRate([], 2)).toBe(0);
  });

  test('targets are computed from the measurements they name', () => {
    const rows = evaluateTargets(results());
    const row = (prefix: string) => rows.find((r) => r.target.startsWith(prefix))!;
    // 190/s served vs the best cut-text raw run (200/s at b32) = 0.95
    expect(row('saturated text')).toMatchObject({ met: true });
    expect(row('saturated text').measured).toContain('0.95');
    // 26 vs 30 = 0.87 with unary callers; a stream at 28/s (0.93) is the server's best
    expect(row('saturated image').met).toBe(false);
    const withStream = results();
    withStream.models['ViT-B-32']!.server!.served.push(
      served('stream-image', 'on', 64, 28, 2000, '224px JPEG'),
      served('stream-image', 'on', 64, 29.5, 2000, '512px PNG icon'),
    );
    const streamRow = evaluateTargets(withStream).find((r) => r.target.startsWith('saturated image'))!;
    expect(streamRow).toMatchObject({ met: true });
    expect(streamRow.measured).toContain('28.0/s (stream, 64 in flight)');
    // 13.5 ms served vs 12.5 ms raw b1 (80/s)
    expect(row('single-caller text').measured).toContain('1.00 ms');
    expect(row('single-caller text').met).toBe(true);
    // 53 vs 50 ms: 3 ms over
    expect(row('single-caller image').met).toBe(false);
    expect(row('64 callers: batching on ≥ 2 × off (text)').met).toBe(true);
    expect(row('64 callers: batching on ≥ 2 × off (image)').met).toBe(false);
    // 80/30 = 2.67× at b1 (missed); b32 5× but outputs not bitwise equal (missed)
    expect(rows.filter((r) => r.target.startsWith('text, captions')).map((r) => r.met)).toEqual([false, false]);
    expect(row('raw image graph, batch 1').met).toBe(true);
    expect(row('raw text graph, batch 1').met).toBe(true);
    expect(rows.some((r) => r.model === 'ViT-L-14')).toBe(false);
  });

  test('tables, markdown and chart render every row and series', () => {
    const t = formatTable(
      'T',
      ['name', 'n'],
      [
        ['a', 1],
        ['bb', 12.345],
      ],
    );
    expect(t.split('\n').filter(Boolean)).toHaveLength(5);
    expect(t).toContain('12.35');
    expect(markdownTable(['a', 'b'], [[1, 'x']])).toBe('| a | b |\n|---|---|\n| 1 | x |\n');
    const res = results();
    res.targets = evaluateTargets(res);
    const md = markdownReport(res);
    expect(md).toContain('### ViT-B-32');
    expect(md).toContain('| target | model | measured | required | met |');
    const svg = renderChart('c', [
      {
        title: 'p',
        yLabel: 'y',
        yLog: true,
        series: [
          {
            label: 'a<b',
            points: [
              [1, 10],
              [64, 1000],
            ],
          },
          { label: 'empty', points: [] },
        ],
      },
    ]);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('a&lt;b');
    expect((svg.match(/<path /g) ?? []).length).toBe(1);
    expect(svg).not.toContain('NaN');
  });

  test('unknown models are refused with a typed error', () => {
    expect(parseArch('ViT-B-32')).toBe('ViT-B-32');
    expect(() => parseArch('ViT-H-14')).toThrow(BenchConfigError);
  });
});
