/**
 * Conversions between the fine-tune store records and clipserve.v1 FineTuneService /
 * ModelService messages (proto-loader objects: camelCase fields, enums as their names, unset
 * `optional` fields absent).
 */
import type { Hyperparameters } from '../finetune/method';
import type { DatasetRecord, JobEventRecord, JobRecord, JobState, ModelVersionRecord } from '../store/store';

export const jobStateName = (s: JobState): string => `FINE_TUNE_JOB_STATE_${s.toUpperCase()}`;
const DATASET_FORMATS: Record<string, string> = { pairs: 'DATASET_FORMAT_PAIRS', zip: 'DATASET_FORMAT_ZIP', csv: 'DATASET_FORMAT_CSV' };

export function datasetFormatFromMessage(f: string | undefined): 'pairs' | 'zip' | 'csv' | undefined {
  return (Object.entries(DATASET_FORMATS).find(([, v]) => v === f)?.[0] as 'pairs' | 'zip' | 'csv' | undefined) ?? undefined;
}

const HP_FIELDS: [keyof Hyperparameters, string][] = [
  ['learning_rate', 'learningRate'],
  ['lr_schedule', 'lrSchedule'],
  ['warmup_steps', 'warmupSteps'],
  ['batch_size', 'batchSize'],
  ['epochs', 'epochs'],
  ['precision', 'precision'],
  ['color_jitter', 'colorJitter'],
  ['color_jitter_prob', 'colorJitterProb'],
  ['grayscale_prob', 'grayscaleProb'],
  ['grad_checkpointing', 'gradCheckpointing'],
  ['validation_split', 'validationSplit'],
  ['seed', 'seed'],
  ['gpus_per_node', 'gpusPerNode'],
  ['nodes', 'nodes'],
  ['image', 'image'],
  ['namespace', 'namespace'],
  ['weight_decay', 'weightDecay'],
];

/** The hyperparameters a request set (unset optional fields stay unset; an empty color_jitter is unset). */
export function hyperparametersFromMessage(m: Record<string, unknown> | null | undefined): Hyperparameters {
  const hp: Record<string, unknown> = {};
  if (!m) return hp;
  for (const [snake, camel] of HP_FIELDS) {
    const v = m[camel];
    if (v === undefined || v === null) continue;
    if (snake === 'color_jitter') {
      if (Array.isArray(v) && v.length > 0) hp[snake] = v.map(Number);
      continue;
    }
    hp[snake] = v;
  }
  return hp as Hyperparameters;
}

export function hyperparametersToMessage(hp: Record<string, unknown>): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const [snake, camel] of HP_FIELDS) if (hp[snake] !== undefined) m[camel] = hp[snake];
  return m;
}

const numbersOnly = (o: Record<string, unknown>): Record<string, number> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))) as Record<string, number>;

export function jobToMessage(j: JobRecord): Record<string, unknown> {
  return {
    id: j.id,
    method: j.method,
    baseModel: j.baseModel,
    trainingFile: j.trainingFile,
    validationFile: j.validationFile,
    hyperparameters: hyperparametersToMessage(j.hyperparameters),
    state: jobStateName(j.state),
    fineTunedModel: j.fineTunedModel,
    createdAt: j.createdAt,
    startedAt: j.startedAt,
    finishedAt: j.finishedAt,
    error: j.error ? { code: j.error.code, message: j.error.message, rows: j.error.rows ?? [] } : null,
    metricsBefore: numbersOnly(j.metricsBefore),
    metricsAfter: numbersOnly(j.metricsAfter),
    step: j.step,
    totalSteps: j.totalSteps,
    suffix: j.suffix,
  };
}

export function eventToMessage(e: JobEventRecord): Record<string, unknown> {
  const d = e.data;
  const num = (k: string): number => (typeof d[k] === 'number' ? (d[k] as number) : 0);
  const metrics = (d.metrics ?? d.metrics_after ?? {}) as Record<string, unknown>;
  return {
    sequence: e.sequence,
    type: `FINE_TUNE_EVENT_TYPE_${e.type.toUpperCase()}`,
    createdAtMs: e.createdAtMs,
    message: e.message,
    state: typeof d.state === 'string' ? jobStateName(d.state as JobState) : 'FINE_TUNE_JOB_STATE_UNSPECIFIED',
    step: num('step'),
    epoch: num('epoch'),
    loss: num('loss'),
    learningRate: num('learning_rate'),
    metrics: typeof metrics === 'object' && metrics ? numbersOnly(metrics) : {},
    dataJson: JSON.stringify(d),
  };
}

export function datasetToMessage(d: DatasetRecord): Record<string, unknown> {
  return { id: d.id, name: d.name, format: DATASET_FORMATS[d.format], numPairs: d.numPairs, bytes: d.bytes, createdAt: d.createdAt };
}

export function modelVersionToMessage(v: ModelVersionRecord, activeVersion: string, loadedVersions: readonly string[]): Record<string, unknown> {
  return { version: v.version, name: v.name, parentVersion: v.parentVersion, fineTuneJobId: v.jobId, active: v.version === activeVersion, createdAt: v.createdAt, metrics: numbersOnly(v.metrics), loaded: loadedVersions.includes(v.version) };
}
