import * as fs from 'node:fs';
import { clipMetrics, median, MetricsInputError, similarityMatrix } from '../../server/src/eval/metrics';
import { describeGolden, goldenPath, readF32 } from '../helpers/shared';

interface Case {
  name: string;
  n: number;
  dim: number;
}

const index = (() => {
  try {
    return JSON.parse(fs.readFileSync(goldenPath('metrics', 'index.json'), 'utf8')) as {
      logit_scale: number;
      cases: Case[];
    };
  } catch {
    return { logit_scale: 100, cases: [] as Case[] };
  }
})();

describeGolden('retrieval metrics match open_clip get_clip_metrics', () => {
  test('every golden case is present', () => {
    expect(index.cases.map((c) => c.name)).toEqual(
      expect.arrayContaining(['ties_n40_d32', 'rand_n1000_d32', 'indep_n200_d32']),
    );
  });

  test.each(index.cases.map((c) => [c.name, c] as const))('%s: metrics to 1e-6, ranks identical', (_name, c) => {
    const img = readF32(goldenPath('metrics', c.name, 'image_features.f32'));
    const txt = readF32(goldenPath('metrics', c.name, 'text_features.f32'));
    const expected = JSON.parse(fs.readFileSync(goldenPath('metrics', c.name, 'expected.json'), 'utf8'));
    const got = clipMetrics(img, txt, c.n, c.dim, index.logit_scale);
    expect([...got.image_to_text_ranks]).toEqual(expected.image_to_text_ranks);
    expect([...got.text_to_image_ranks]).toEqual(expected.text_to_image_ranks);
    expect(Object.keys(got.metrics).sort()).toEqual(Object.keys(expected.metrics).sort());
    for (const [k, v] of Object.entries(expected.metrics as Record<string, number>)) {
      expect(Math.abs((got.metrics as unknown as Record<string, number>)[k] - v)).toBeLessThanOrEqual(1e-6);
    }
  });
});

describe('metrics rules', () => {
  test('ties rank a lower-index candidate above the partner, in both directions', () => {
    // Three identical image/text vectors: every score ties, so query i is preceded by i others.
    const v = new Float32Array([1, 0, 1, 0, 1, 0]);
    const r = clipMetrics(v, v, 3, 2, 100);
    expect([...r.image_to_text_ranks]).toEqual([0, 1, 2]);
    expect([...r.text_to_image_ranks]).toEqual([0, 1, 2]);
    expect(r.metrics.image_to_text_mean_rank).toBe(2);
    expect(r.metrics['image_to_text_R@1']).toBeCloseTo(1 / 3, 12);
  });

  test('directions differ when the similarity matrix is not symmetric', () => {
    // S = [[0.6, 0.96], [0, 0.6]]: image 0 prefers text 1 (i2t ranks [1, 0]); both texts prefer
    // image 0, so text 1 misses its partner (t2i ranks [0, 1]).
    const img = new Float32Array([0.6, 0.8, 0, 1]);
    const txt = new Float32Array([1, 0, 0.8, 0.6]);
    const r = clipMetrics(img, txt, 2, 2, 1);
    expect([...r.image_to_text_ranks]).toEqual([1, 0]);
    expect([...r.text_to_image_ranks]).toEqual([0, 1]);
    expect(r.metrics.image_to_text_median_rank).toBe(1); // floor(median([1, 0]) = 0.5) + 1
  });

  test('scores are float32 with the scale applied before the dot product', () => {
    const s = similarityMatrix(new Float32Array([0.1, 0.2]), new Float32Array([0.3, 0.7]), 1, 2, 100);
    const a0 = Math.fround(100 * Math.fround(0.1));
    const a1 = Math.fround(100 * Math.fround(0.2));
    expect(s[0]).toBe(Math.fround(Math.fround(a0 * Math.fround(0.3)) + Math.fround(a1 * Math.fround(0.7))));
  });

  test('streamed ranks equal ranks read off the full similarity matrix (n not a multiple of 4, many ties)', () => {
    const n = 23;
    const dim = 6;
    let seed = 7;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    // Values in {-1, 0, 1}/2 make exact ties common.
    const img = Float32Array.from({ length: n * dim }, () => (Math.floor(rand() * 3) - 1) / 2);
    const txt = Float32Array.from({ length: n * dim }, () => (Math.floor(rand() * 3) - 1) / 2);
    const s = similarityMatrix(img, txt, n, dim, 100);
    const brute = (at: (q: number, c: number) => number): number[] =>
      Array.from({ length: n }, (_, q) => {
        let r = 0;
        for (let c = 0; c < n; c++) if (at(q, c) > at(q, q) || (c < q && at(q, c) === at(q, q))) r++;
        return r;
      });
    const r = clipMetrics(img, txt, n, dim, 100);
    expect([...r.image_to_text_ranks]).toEqual(brute((q, c) => s[q * n + c]));
    expect([...r.text_to_image_ranks]).toEqual(brute((q, c) => s[c * n + q]));
  });

  test('numpy median and input validation', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => clipMetrics(new Float32Array(3), new Float32Array(4), 2, 2, 100)).toThrow(MetricsInputError);
    expect(() => clipMetrics(new Float32Array(0), new Float32Array(0), 0, 2, 100)).toThrow(/n >= 1/);
  });
});
