/**
 * Conversions between the fine-tune store records and clipserve.v1 FineTuneService /
 * ModelService messages, typed by the types generated from proto/ (./generated): requests as
 * proto-loader hands them over (`__Output`: camelCase fields, enums as their names, unset
 * `optional` fields absent), responses as proto-loader serializes them, every field set.
 */
import type { Hyperparameters } from '../finetune/method';
import type { DatasetRecord, JobEventRecord, JobRecord, JobState, ModelVersionRecord } from '../store/store';
import type { Dataset } from './generated/clipserve/v1/Dataset';
import type { DatasetFormat__Output } from './generated/clipserve/v1/DatasetFormat';
import type { FineTuneEvent } from './generated/clipserve/v1/FineTuneEvent';
import type { FineTuneEventType__Output } from './generated/clipserve/v1/FineTuneEventType';
import type { FineTuneJob } from './generated/clipserve/v1/FineTuneJob';
import type { FineTuneJobState__Output } from './generated/clipserve/v1/FineTuneJobState';
import type {
  Hyperparameters as HyperparametersMsg,
  Hyperparameters__Output,
} from './generated/clipserve/v1/Hyperparameters';
import type { ModelVersion } from './generated/clipserve/v1/ModelVersion';

const JOB_STATES: Record<JobState, FineTuneJobState__Output> = {
  queued: 'FINE_TUNE_JOB_STATE_QUEUED',
  validating_files: 'FINE_TUNE_JOB_STATE_VALIDATING_FILES',
  running: 'FINE_TUNE_JOB_STATE_RUNNING',
  succeeded: 'FINE_TUNE_JOB_STATE_SUCCEEDED',
  failed: 'FINE_TUNE_JOB_STATE_FAILED',
  cancelled: 'FINE_TUNE_JOB_STATE_CANCELLED',
};

export const jobStateName = (s: JobState): FineTuneJobState__Output => JOB_STATES[s];
const DATASET_FORMATS: Record<DatasetRecord['format'], DatasetFormat__Output> = {
  pairs: 'DATASET_FORMAT_PAIRS',
  zip: 'DATASET_FORMAT_ZIP',
  csv: 'DATASET_FORMAT_CSV',
};

export function datasetFormatFromMessage(f: DatasetFormat__Output | undefined): DatasetRecord['format'] | undefined {
  return (Object.keys(DATASET_FORMATS) as DatasetRecord['format'][]).find((k) => DATASET_FORMATS[k] === f);
}

/** Model-card (snake_case) name → message field, for every hyperparameter. */
const HP_FIELDS: [keyof Hyperparameters, keyof Hyperparameters__Output & keyof HyperparametersMsg][] = [
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

/**
 * The hyperparameters a request set (unset optional fields stay unset; an empty color_jitter is
 * unset). Values pass as sent: the method validates them (resolveHyperparameters).
 */
export function hyperparametersFromMessage(m: Hyperparameters__Output | null | undefined): Hyperparameters {
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

export function hyperparametersToMessage(hp: Hyperparameters): HyperparametersMsg {
  const m: Record<string, unknown> = {};
  for (const [snake, camel] of HP_FIELDS) if (hp[snake] !== undefined) m[camel] = hp[snake];
  return m as HyperparametersMsg;
}

const numbersOnly = (o: Record<string, unknown>): Record<string, number> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))) as Record<
    string,
    number
  >;

export function jobToMessage(j: JobRecord): Required<FineTuneJob> {
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

export function eventToMessage(e: JobEventRecord): Required<FineTuneEvent> {
  const d = e.data;
  const num = (k: string): number => (typeof d[k] === 'number' ? (d[k] as number) : 0);
  const metrics = (d.metrics ?? d.metrics_after ?? {}) as Record<string, unknown>;
  return {
    sequence: e.sequence,
    // The store's event types are the enum's names in lower case (log, state, step, epoch, report).
    type: `FINE_TUNE_EVENT_TYPE_${e.type.toUpperCase()}` as FineTuneEventType__Output,
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

export function datasetToMessage(d: DatasetRecord): Required<Dataset> {
  return {
    id: d.id,
    name: d.name,
    format: DATASET_FORMATS[d.format],
    numPairs: d.numPairs,
    bytes: d.bytes,
    createdAt: d.createdAt,
  };
}

export function modelVersionToMessage(
  v: ModelVersionRecord,
  activeVersion: string,
  loadedVersions: readonly string[],
): Required<ModelVersion> {
  return {
    version: v.version,
    name: v.name,
    parentVersion: v.parentVersion,
    fineTuneJobId: v.jobId,
    active: v.version === activeVersion,
    createdAt: v.createdAt,
    metrics: numbersOnly(v.metrics),
    loaded: loadedVersions.includes(v.version),
  };
}
