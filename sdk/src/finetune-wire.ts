/**
 * FineTuneService / ModelService messages as @grpc/proto-loader hands them over (see ./proto.ts
 * for the options), and their conversion to and from the public types in ./finetune-types.ts.
 * Internal.
 */
import { ClipServeError, Status } from './errors.js';
import type {
  Dataset, DatasetFormat, FineTuneEvent, FineTuneEventType, FineTuneHyperparameters, FineTuneJob, FineTuneJobState, ModelVersion,
} from './finetune-types.js';

export type WireDatasetFormat = 'DATASET_FORMAT_UNSPECIFIED' | 'DATASET_FORMAT_PAIRS' | 'DATASET_FORMAT_ZIP' | 'DATASET_FORMAT_CSV';

export interface WireDataset {
  id: string;
  name: string;
  format: WireDatasetFormat;
  numPairs: number;
  bytes: number;
  createdAt: number;
}

export interface UploadDatasetRequest {
  header?: { name: string; format: WireDatasetFormat; csvImgKey: string; csvCaptionKey: string; csvSeparator: string };
  pair?: { image: Buffer; caption: string };
  chunk?: Buffer;
}

/** proto3 `optional` fields: absent (undefined, or null from some loaders) when unset. */
export type WireHyperparameters = { [K in keyof FineTuneHyperparameters]?: FineTuneHyperparameters[K] | number[] | null };

export interface WireJob {
  id: string;
  method: string;
  baseModel: string;
  trainingFile: string;
  validationFile: string;
  hyperparameters?: WireHyperparameters | null;
  state: string;
  fineTunedModel: string;
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  error?: { code: string; message: string; rows: number[] } | null;
  metricsBefore: Record<string, number>;
  metricsAfter: Record<string, number>;
  step: number;
  totalSteps: number;
  suffix: string;
}

export interface WireEvent {
  sequence: number;
  type: string;
  createdAtMs: number;
  message: string;
  state: string;
  step: number;
  epoch: number;
  loss: number;
  learningRate: number;
  metrics: Record<string, number>;
  dataJson: string;
}

export interface WireModelVersion {
  version: string;
  name: string;
  parentVersion: string;
  fineTuneJobId: string;
  active: boolean;
  createdAt: number;
  metrics: Record<string, number>;
  /** Absent from servers older than several-versions serving. */
  loaded?: boolean;
}

const FORMATS: Record<DatasetFormat, WireDatasetFormat> = { pairs: 'DATASET_FORMAT_PAIRS', zip: 'DATASET_FORMAT_ZIP', csv: 'DATASET_FORMAT_CSV' };

export function datasetFormatToWire(f: DatasetFormat): WireDatasetFormat {
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

export function datasetFromWire(d: WireDataset | null | undefined): Dataset {
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

const HP_KEYS: (keyof FineTuneHyperparameters)[] = [
  'learningRate', 'lrSchedule', 'warmupSteps', 'batchSize', 'epochs', 'precision', 'colorJitter', 'colorJitterProb', 'grayscaleProb',
  'gradCheckpointing', 'validationSplit', 'seed', 'weightDecay', 'gpusPerNode', 'nodes', 'image', 'namespace',
];

/** Only the fields the caller set travel: an unset field means "the method's default". */
export function hyperparametersToWire(hp: FineTuneHyperparameters | undefined): WireHyperparameters | undefined {
  if (hp === undefined) return undefined;
  if (hp === null || typeof hp !== 'object') throw new ClipServeError({ code: Status.INVALID_ARGUMENT, details: 'hyperparameters must be an object' });
  const out: WireHyperparameters = {};
  for (const [k, v] of Object.entries(hp)) {
    if (!(HP_KEYS as string[]).includes(k)) {
      throw new ClipServeError({ code: Status.INVALID_ARGUMENT, details: `unknown hyperparameter ${JSON.stringify(k)} (known: ${HP_KEYS.join(', ')})` });
    }
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

export function hyperparametersFromWire(w: WireHyperparameters | null | undefined): FineTuneHyperparameters {
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

export function jobFromWire(j: WireJob | null | undefined): FineTuneJob {
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

export function eventFromWire(e: WireEvent | null | undefined, jobState: string): FineTuneEvent {
  if (!e) throw new ClipServeError({ code: Status.INTERNAL, details: 'the server sent a watch message without an event' });
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

export function modelVersionFromWire(m: WireModelVersion | null | undefined): ModelVersion {
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
