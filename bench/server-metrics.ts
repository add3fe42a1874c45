/**
 * Where the served time goes, from the server's own Prometheus histograms (/metrics): for a
 * modality, the difference of two scrapes gives the mean batch size, inference run time,
 * preprocessing time and queue wait of the items served in between.
 */

export interface MetricsSnapshot {
  /** metric name + '{modality="…"}' → value, for the _sum and _count series we read */
  values: Map<string, number>;
}

export interface ServedBreakdown {
  runs: number;
  meanBatchSize: number;
  meanInferenceMs: number;
  meanPreprocessMs: number;
  meanQueueWaitMs: number;
}

const FAMILIES = [
  'clipserve_batch_size',
  'clipserve_inference_seconds',
  'clipserve_preprocess_seconds',
  'clipserve_queue_wait_seconds',
];

export async function scrape(metricsPort: number): Promise<MetricsSnapshot> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const values = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^(\w+)_(sum|count)\{modality="(\w+)"\} (\S+)$/.exec(line);
    if (m && FAMILIES.includes(m[1])) values.set(`${m[1]}_${m[2]}{${m[3]}}`, Number(m[4]));
  }
  return { values };
}

export function breakdown(
  before: MetricsSnapshot,
  after: MetricsSnapshot,
  modality: 'text' | 'image',
): ServedBreakdown {
  const d = (name: string, part: 'sum' | 'count'): number => {
    const key = `${name}_${part}{${modality}}`;
    return (after.values.get(key) ?? 0) - (before.values.get(key) ?? 0);
  };
  const mean = (name: string, scale: number): number => {
    const n = d(name, 'count');
    return n > 0 ? (d(name, 'sum') / n) * scale : Number.NaN;
  };
  return {
    runs: d('clipserve_inference_seconds', 'count'),
    meanBatchSize: mean('clipserve_batch_size', 1),
    meanInferenceMs: mean('clipserve_inference_seconds', 1000),
    meanPreprocessMs: mean('clipserve_preprocess_seconds', 1000),
    meanQueueWaitMs: mean('clipserve_queue_wait_seconds', 1000),
  };
}
