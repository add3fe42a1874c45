/**
 * Conversions between the FineTuneService / ModelService messages, typed by the types generated
 * from the .proto files (./generated/wire, `npm run gen:proto` at the repository root; responses
 * as proto-loader hands them over with the options of ./proto.ts), and the public types in
 * ./finetune-types.ts. Internal.
 */
import { ClipServeError, Status } from './errors.js';
import type {
  Dataset,
  DatasetFormat,
  FineTuneEvent,
  FineTuneEventType,
  FineTuneHyperparameters,
  FineTuneJob,
  FineTuneJobState,
  ModelVersion,
} from './finetune-types.js';
import type { Dataset__Output } from './generated/wire/clipserve/v1/Dataset.js';
import type { DatasetFormat__Output } from './generated/wire/clipserve/v1/DatasetFormat.js';
import type { FineTuneEvent__Output } from './generated/wire/clipserve/v1/FineTuneEvent.js';
import type { FineTuneJob__Output } from './generated/wire/clipserve/v1/FineTuneJob.js';
import type { Hyperparameters, Hyperparameters__Output } from './generated/wire/clipserve/v1/Hyperparameters.js';
import type { ModelVersion__Output } from './generated/wire/clipserve/v1/ModelVersion.js';

const FORMATS: Record<DatasetFormat, DatasetFormat__Output> = {
  pairs: 'DATASET_FORMAT_PAIRS',
  zip: 'DATASET_FORMAT_ZIP',
  csv: 'DATASET_FORMAT_CSV',
};

export function datasetFormatToWire(f: DatasetFormat): DatasetFormat__Output {
  return FORMATS[f];
}

function lowerSuffix(value: string, prefix: string): string {
  return value.startsWith(prefix) ? value.slice(prefix.length).toLowerCase() : value.toLowerCase();
}

export function jobStateFromWire(s: string): FineTuneJobState {
  return lowerSuffix(s, 'FINE_TUNE_JOB_STATE_') as FineTuneJobState;
}

function seconds(s: number): Date | null {
  return s > 0 ? new Date(s * 1000) : null;
}

export function datasetFromWire(d: Dataset__Output | null | undefined): Dataset {
  if (!d) throw new ClipServeError({ code: Status.INTERNAL, details: 'the server answered without the dataset' });
  return {
    id: d.id,
    name: d.name,
    format: lowerSuffix(d.format, 'DATASET_FORMAT_') as DatasetFormat,
    numPairs: d.numPairs,
    bytes: d.bytes,
    createdAt: new Date(d.createdAt * 1000),
  };
}

/** Every public hyperparameter; each must be a field of the message (the compiler checks). */
const HP_KEYS: (keyof FineTuneHyperparameters & keyof Hyperparameters & keyof Hyperparameters__Output)[] = [
  'learningRate',
  'lrSchedule',
  'warmupSteps',
  'batchSize',
  'epochs',
  'precision',
  'colorJitter',
  'colorJitterProb',
  'grayscaleProb',
  'gradCheckpointing',
  'validationSplit',
  'seed',
  'weightDecay',
  'gpusPerNode',
  'nodes',
  'image',
  'namespace',
];

/** Only the fields the caller set travel: an unset field means "the method's default". */
export function hyperparametersToWire(hp: FineTuneHyperparameters | undefined): Hyperparameters | undefined {
  if (hp === undefined) return undefined;
  if (hp === null || typeof hp !== 'object')
    throw new ClipServeError({ code: Status.INVALID_ARGUMENT, details: 'hyperparameters must be an object' });
  const out: Hyperparameters = {};
  for (const [k, v] of Object.entries(hp)) {
    if (!(HP_KEYS as string[]).includes(k)) {
      throw new ClipServeError({
        code: Status.INVALID_ARGUMENT,
        details: `unknown hyperparameter ${JSON.stringify(k)} (known: ${HP_KEYS.join(', ')})`,
      });
    }
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

export function hyperparametersFromWire(w: Hyperparameters__Output | null | undefined): FineTuneHyperparameters {
  const out: Record<string, unknown> = {};
  if (!w) return out;
  for (const k of HP_KEYS) {
    const v = w[k];
    if (v === undefined || v === null) continue;
    // A repeated field with nothing in it is "unset" too.
    if (Array.isArray(v) && v.length === 0) continue;
    out[k] = v;
  }
  return out as FineTuneHyperparameters;
}

export function jobFromWire(j: FineTuneJob__Output | null | undefined): FineTuneJob {
  if (!j) throw new ClipServeError({ code: Status.INTERNAL, details: 'the server answered without the job' });
  return {
    id: j.id,
    method: j.method,
    baseModel: j.baseModel,
    trainingFile: j.trainingFile,
    validationFile: j.validationFile,
    hyperparameters: hyperparametersFromWire(j.hyperparameters),
    state: jobStateFromWire(j.state),
    fineTunedModel: j.fineTunedModel,
    createdAt: new Date(j.createdAt * 1000),
    startedAt: seconds(j.startedAt),
    finishedAt: seconds(j.finishedAt),
    error: j.error ? { code: j.error.code, message: j.error.message, rows: [...(j.error.rows ?? [])] } : null,
    metricsBefore: { ...j.metricsBefore },
    metricsAfter: { ...j.metricsAfter },
    step: j.step,
    totalSteps: j.totalSteps,
    suffix: j.suffix,
  };
}

export function eventFromWire(e: FineTuneEvent__Output | null | undefined, jobState: string): FineTuneEvent {
  if (!e)
    throw new ClipServeError({ code: Status.INTERNAL, details: 'the server sent a watch message without an event' });
  let data: Record<string, unknown> = {};
  if (e.dataJson) {
    try {
      const parsed = JSON.parse(e.dataJson) as unknown;
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) data = parsed as Record<string, unknown>;
    } catch {
      // Not JSON: keep the typed fields only.
    }
  }
  const state = e.state && e.state !== 'FINE_TUNE_JOB_STATE_UNSPECIFIED' ? jobStateFromWire(e.state) : undefined;
  return {
    sequence: e.sequence,
    type: lowerSuffix(e.type, 'FINE_TUNE_EVENT_TYPE_') as FineTuneEventType,
    createdAt: new Date(e.createdAtMs),
    message: e.message,
    ...(state ? { state } : {}),
    step: e.step,
    epoch: e.epoch,
    loss: e.loss,
    learningRate: e.learningRate,
    metrics: { ...e.metrics },
    data,
    jobState: jobStateFromWire(jobState),
  };
}

export function modelVersionFromWire(m: ModelVersion__Output | null | undefined): ModelVersion {
  if (!m) throw new ClipServeError({ code: Status.INTERNAL, details: 'the server answered without the model version' });
  return {
    version: m.version,
    name: m.name,
    parentVersion: m.parentVersion,
    fineTuneJobId: m.fineTuneJobId,
    active: m.active,
    createdAt: seconds(m.createdAt),
    metrics: { ...m.metrics },
    loaded: m.loaded ?? false,
  };
}
