/** Public types of `client.fineTunes` and `client.models` (clipserve.v1 FineTuneService / ModelService). */
import type { CallOptions, ImageInput } from './types.js';

// ------------------------------------------------------------------------------------------ datasets

export type DatasetFormat = 'pairs' | 'zip' | 'csv';

export interface Dataset {
  /** "ds-…": pass as `trainingFile` / `validationFile` of `fineTunes.create`. */
  id: string;
  name: string;
  format: DatasetFormat;
  /** Image–caption rows. */
  numPairs: number;
  bytes: number;
  createdAt: Date;
}

export interface ImageCaptionPair {
  image: ImageInput;
  caption: string;
}

/** Column names and separator of a CSV (defaults on the server: `filepath`, `title`, tab). */
export interface CsvColumns {
  imgKey?: string;
  captionKey?: string;
  separator?: string;
}

/** Bytes of an archive or CSV: a file path, a buffer, or a stream of chunks (e.g. fs.createReadStream). */
export type ByteSource = string | Buffer | Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/**
 * What to upload, one of:
 * - `pairs`: image–caption pairs, each sent as it is read (a file path is read lazily);
 * - `zip`: one zip archive holding a CSV (`filepath` / `title` columns) and the images it names;
 * - `csv`: one CSV whose `filepath` column names images already in the server's data directory.
 */
export type DatasetUpload =
  | { name?: string; pairs: Iterable<ImageCaptionPair> | AsyncIterable<ImageCaptionPair> }
  | { name?: string; zip: ByteSource; columns?: CsvColumns }
  | { name?: string; csv: ByteSource; columns?: CsvColumns };

export interface UploadProgress {
  /** Pairs or chunks sent so far. */
  messages: number;
  /** Image / archive bytes sent so far. */
  bytes: number;
}

export interface UploadDatasetOptions extends CallOptions {
  /** Archive / CSV chunk size; default 1 MiB. */
  chunkBytes?: number;
  onProgress?: (progress: UploadProgress) => void;
}

// ------------------------------------------------------------------------------------------ jobs

export type FineTuneJobState = 'queued' | 'validating_files' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** `adapter` trains inside the server; `full` runs OpenCLIP's trainer as a Kubernetes Job. */
export type FineTuneMethodName = 'adapter' | 'full';

/** Hyperparameters, named as in the model card; unset fields take the method's defaults. */
export interface FineTuneHyperparameters {
  learningRate?: number;
  /** 'cosine' (the only schedule). */
  lrSchedule?: string;
  warmupSteps?: number;
  /** Per GPU for `full`; the global batch is batchSize × gpusPerNode × nodes. */
  batchSize?: number;
  epochs?: number;
  /** 'fp32', 'amp_bf16', 'amp', 'fp16', 'bf16', … */
  precision?: string;
  /** [brightness, contrast, saturation, hue], applied with colorJitterProb. */
  colorJitter?: [number, number, number, number];
  colorJitterProb?: number;
  grayscaleProb?: number;
  gradCheckpointing?: boolean;
  /** Fraction of the pairs held out for validation when there is no validationFile. */
  validationSplit?: number;
  seed?: number;
  weightDecay?: number;
  /** `full` only: the Kubernetes training job's shape and image. */
  gpusPerNode?: number;
  nodes?: number;
  image?: string;
  namespace?: string;
}

export interface FineTuneJobError {
  /** Machine-readable, e.g. "invalid_file", "interrupted", "internal". */
  code: string;
  message: string;
  /** 1-based data rows at fault, when the error is about the data. */
  rows: number[];
}

export interface FineTuneJob {
  /** "ftjob-…". */
  id: string;
  method: string;
  /** The model version fine-tuned from. */
  baseModel: string;
  trainingFile: string;
  validationFile: string;
  /** As requested (only the fields that were set). */
  hyperparameters: FineTuneHyperparameters;
  state: FineTuneJobState;
  /** The new model version, once the job has succeeded ("" before). */
  fineTunedModel: string;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  /** Set when state is 'failed'. */
  error: FineTuneJobError | null;
  /** Validation metrics before and after training (keys as in the model card, e.g. "text_to_image_R@1"). */
  metricsBefore: Record<string, number>;
  metricsAfter: Record<string, number>;
  step: number;
  totalSteps: number;
  suffix: string;
}

export interface CreateFineTuneJobParams {
  /** Dataset id ("ds-…") or a CSV path inside the server's data directory. */
  trainingFile: string;
  validationFile?: string;
  /** Default 'adapter'. */
  method?: FineTuneMethodName;
  /** A model version (models.list); default: the active model. */
  baseModel?: string;
  hyperparameters?: FineTuneHyperparameters;
  /** Up to 40 characters [a-z0-9-] added to the new model version's name. */
  suffix?: string;
}

export interface ListFineTuneJobsParams {
  /** Jobs per page (server default 20, at most 100). */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

export interface ListDatasetsParams {
  /** Datasets per page (server default 50, at most 500). */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

export interface DatasetPage {
  /** The caller's datasets (those its API key uploaded or registered), newest first. */
  datasets: Dataset[];
  /** Absent on the last page. */
  nextPageToken?: string;
}

export interface FineTuneJobPage {
  /** Newest first. */
  jobs: FineTuneJob[];
  /** Absent on the last page. */
  nextPageToken?: string;
}

export type FineTuneEventType = 'log' | 'state' | 'step' | 'epoch' | 'report';

export interface FineTuneEvent {
  /** Increasing per job, from 1: pass the last one seen as `afterSequence` to resume a watch. */
  sequence: number;
  type: FineTuneEventType;
  createdAt: Date;
  message: string;
  /** 'state' events: the state entered. */
  state?: FineTuneJobState;
  /** 'step' and 'epoch' events. */
  step: number;
  epoch: number;
  loss: number;
  learningRate: number;
  /** 'epoch' (validation) and 'report' (after) metrics. */
  metrics: Record<string, number>;
  /** Everything the event carries (a superset of the typed fields). */
  data: Record<string, unknown>;
  /** The job's state as of this event. */
  jobState: FineTuneJobState;
}

export interface WatchFineTuneJobOptions extends CallOptions {
  /** Only events after this sequence number (default 0: from the start). */
  afterSequence?: number;
}

// ------------------------------------------------------------------------------------------ models

export interface ModelVersion {
  /** The version string embedding calls pin with `modelVersion`. */
  version: string;
  name: string;
  /** The version this one was fine-tuned from; "" for a base model. */
  parentVersion: string;
  /** The fine-tune job that produced it; "" for a base model. */
  fineTuneJobId: string;
  /** Serving now. */
  active: boolean;
  createdAt: Date | null;
  /** Validation metrics of the producing job. */
  metrics: Record<string, number>;
  /** In the server's memory now: calls pinning it run without loading it first. */
  loaded: boolean;
}

export interface ModelList {
  /** Newest first. */
  models: ModelVersion[];
  activeVersion: string;
  /** The versions in memory now (active first, then most recently used). */
  loadedVersions: string[];
}

export interface ActivateModelResult {
  model: ModelVersion;
  /** The version that served before. */
  previousVersion: string;
}
