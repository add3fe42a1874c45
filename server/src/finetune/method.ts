/**
 * The contract between the fine-tune job runner (server/src/finetune/jobs.ts) and a training
 * method: `adapter` (in-process, server/src/finetune/adapter/) or `full` (a Kubernetes training
 * job, server/src/finetune/full/). The runner owns the job's state machine, storage and events;
 * a method only validates hyperparameters and turns a dataset + base bundle into a new bundle.
 */

/** Hyperparameters, named as in the model card (open_clip_train flags). Every field is optional
 *  on the wire; a method fills its own defaults (see `resolveHyperparameters` of each method). */
export interface Hyperparameters {
  learning_rate?: number;
  /** Only 'cosine' (cosine decay after linear warmup, as open_clip_train's --lr-scheduler cosine). */
  lr_schedule?: 'cosine';
  warmup_steps?: number;
  /** Per GPU for `full`; the global batch is batch_size × gpus_per_node × nodes. */
  batch_size?: number;
  epochs?: number;
  precision?: Precision;
  /** Colour jitter strengths [brightness, contrast, saturation, hue] as torchvision ColorJitter. */
  color_jitter?: [number, number, number, number];
  color_jitter_prob?: number;
  grayscale_prob?: number;
  grad_checkpointing?: boolean;
  /** Fraction of the training pairs held out for validation when no validation file is given. */
  validation_split?: number;
  seed?: number;
  /** AdamW weight decay (open_clip_train --wd). */
  weight_decay?: number;
  // `full` only: the shape of the Kubernetes training job.
  gpus_per_node?: number;
  nodes?: number;
  /** Container image of the open_clip trainer. */
  image?: string;
  namespace?: string;
}

/** open_clip_train --precision values. */
export const PRECISIONS = [
  'fp32',
  'amp',
  'amp_bf16',
  'amp_bfloat16',
  'bf16',
  'fp16',
  'pure_bf16',
  'pure_fp16',
] as const;
export type Precision = (typeof PRECISIONS)[number];

export type FineTuneMethodName = 'adapter' | 'full';
export const METHOD_NAMES: readonly FineTuneMethodName[] = ['adapter', 'full'];

/** A method's refusal of a job's hyperparameters or configuration; the job fails before it runs
 *  and CreateFineTuneJob answers INVALID_ARGUMENT with this message. */
export class FineTuneValidationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FineTuneValidationError';
  }
}

/** A job the server cannot run as configured (no cluster, no trainer image, a base model the
 *  trainer cannot load): CreateFineTuneJob answers FAILED_PRECONDITION with this message. */
export class FineTunePreconditionError extends FineTuneValidationError {
  constructor(message: string) {
    super(message);
    this.name = 'FineTunePreconditionError';
  }
}

/**
 * `ctx.signal.reason` when the server is shutting down rather than the job being cancelled: the
 * method should stop without destroying resumable work (e.g. a `full` Kubernetes Job keeps
 * running and is adopted when the restarted server runs the job again). Any other reason is a cancel.
 */
export const SHUTDOWN_ABORT_REASON = 'shutdown';

/** Thrown (or rejected) by `run` when `ctx.signal` aborted it. */
export class FineTuneCancelledError extends Error {
  constructor(message = 'job cancelled') {
    super(message);
    this.name = 'FineTuneCancelledError';
  }
}

/** Rows of the job's dataset a method could not use (an image that does not decode): the job
 *  fails with code `invalid_file` naming the rows, like a dataset validation error. */
export class FineTuneDataError extends Error {
  constructor(
    message: string,
    readonly rows: number[] = [],
  ) {
    super(message);
    this.name = 'FineTuneDataError';
  }
}

export type FineTuneEventType = 'log' | 'state' | 'step' | 'epoch' | 'report';

/** One progress event. Conventional `data` keys: step/total_steps/loss/learning_rate ('step'),
 *  epoch + metrics ('epoch'), metrics_before/metrics_after ('report'). */
export interface FineTuneMethodEvent {
  type: FineTuneEventType;
  message?: string;
  data?: Record<string, unknown>;
}

export interface FineTuneJobContext {
  jobId: string;
  hyperparameters: Hyperparameters;
  /** The validated dataset's directory, inside the data dir: `pairs.tsv` (filepath<TAB>title,
   *  paths relative to this dir) with the images, plus `validation.tsv` when the job has a
   *  separate validation set. */
  datasetDir: string;
  /** The job's own artifact directory (checkpoints, logs, the output bundle); no other job writes here. */
  workDir: string;
  baseModel: { version: string; bundleDir: string };
  /** The version string the new bundle should carry (its manifest `version`); the runner registers
   *  the returned bundle under its manifest's version, so a method may also choose its own. */
  outputVersion: string;
  /** Aborted on cancel, and on server shutdown with reason SHUTDOWN_ABORT_REASON; `run` must stop
   *  promptly and free its resources. */
  signal: AbortSignal;
  emit(event: FineTuneMethodEvent): void;
}

/** What CreateFineTuneJob knows of a job before accepting it. */
export interface FineTuneJobPlan {
  hyperparameters: Hyperparameters;
  baseModel: { version: string; bundleDir: string };
  /** Pairs in the training dataset. */
  trainingPairs: number;
  /** Pairs in the separate validation dataset, when one is given. */
  validationPairs?: number;
}

export interface FineTuneMethod {
  readonly name: FineTuneMethodName;
  /** Throws FineTuneValidationError with a clear message (e.g. 'full' without a cluster configured). */
  validate(hp: Hyperparameters): void;
  /** Optional checks that need the base model and the dataset, run by CreateFineTuneJob before
   *  the job is accepted: throws FineTuneValidationError / FineTunePreconditionError. */
  checkJob?(plan: FineTuneJobPlan): void;
  /** Paths under a job's workDir the method never uses again once the job failed (features,
   *  checkpoints, a half-written bundle): the runner frees them when the data directory filled up. */
  readonly failedJobLeftovers?: readonly string[];
  /** Runs the job; resolves with the bundle dir of the new model version. Must honour signal. */
  run(ctx: FineTuneJobContext): Promise<{ bundleDir: string; metrics?: Record<string, number> }>;
}
