/**
 * Presentation of retrieval metrics: the model-card table (rows Image-to-Text and Text-to-Image;
 * recalls in percent) and the JSON file, which keeps open_clip's metric names so results compare
 * directly with open_clip_train's results.jsonl.
 */
import type { Direction, RetrievalMetrics } from './metrics';

const ROWS: Array<[Direction, string]> = [
  ['image_to_text', 'Image-to-Text'],
  ['text_to_image', 'Text-to-Image'],
];

export function formatMetricsTable(m: RetrievalMetrics): string {
  const get = (k: string): number => (m as unknown as Record<string, number>)[k];
  const header = ['', 'R@1', 'R@5', 'R@10', 'Mean Rank', 'Median Rank'];
  const lines = ROWS.map(([key, label]) => [
    label,
    (100 * get(`${key}_R@1`)).toFixed(2),
    (100 * get(`${key}_R@5`)).toFixed(2),
    (100 * get(`${key}_R@10`)).toFixed(2),
    get(`${key}_mean_rank`).toFixed(2),
    String(get(`${key}_median_rank`)),
  ]);
  const table = [header, ...lines];
  const widths = header.map((_, c) => Math.max(...table.map((r) => r[c].length)));
  const fmt = (r: string[]): string =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  return [fmt(header), ...lines.map(fmt)].join('\n') + '\n';
}

export interface EvalReport {
  model: { name: string; version: string };
  data: string;
  num_samples: number;
  metrics: RetrievalMetrics;
}

export function evalReportJson(report: EvalReport): string {
  return JSON.stringify(report, null, 2) + '\n';
}
