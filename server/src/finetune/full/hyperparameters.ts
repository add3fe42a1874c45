/**
 * Hyperparameters of a `full` fine-tune: the model card's own recipe (OpenCLIP trainer, lr 5e-6
 * cosine, 64 per GPU, 40 epochs, amp_bf16, colour jitter (0.2, 0.2, 0.1, 0.0) with p 0.7, grayscale
 * 0.2, gradient checkpointing) fills every field the request leaves unset. Range checks happen
 * here, before anything is submitted to the cluster, so a bad request fails as INVALID_ARGUMENT
 * rather than as a crashed training pod minutes later.
 */
import { FineTuneValidationError, PRECISIONS, type Hyperparameters, type Precision } from '../method';

export interface FullHyperparameters {
  learning_rate: number;
  lr_schedule: 'cosine';
  warmup_steps: number;
  /** Per GPU (open_clip_train --batch-size). */
  batch_size: number;
  epochs: number;
  precision: Precision;
  color_jitter: [number, number, number, number];
  color_jitter_prob: number;
  grayscale_prob: number;
  grad_checkpointing: boolean;
  /** Held-out fraction when the dataset has no validation.tsv; 0 = no validation. */
  validation_split: number;
  seed: number;
  weight_decay: number;
  gpus_per_node: number;
  nodes: number;
  /** Undefined until resolved against the method's configured default. */
  image?: string;
  namespace?: string;
}

/** The model card's recipe. warmup_steps and weight_decay are not on the card: open_clip_train's
 *  own --wd default (0.2), and a warmup short enough for a ~60-step epoch (23k pairs / 384). */
export const FULL_DEFAULTS: Readonly<Omit<FullHyperparameters, 'image' | 'namespace'>> = Object.freeze({
  learning_rate: 5e-6,
  lr_schedule: 'cosine',
  warmup_steps: 100,
  batch_size: 64,
  epochs: 40,
  precision: 'amp_bf16',
  color_jitter: [0.2, 0.2, 0.1, 0.0] as [number, number, number, number],
  color_jitter_prob: 0.7,
  grayscale_prob: 0.2,
  grad_checkpointing: true,
  validation_split: 0.1,
  seed: 0,
  weight_decay: 0.2,
  gpus_per_node: 1,
  nodes: 1,
});

/** Upper bounds that catch typos (e.g. 1e6 GPUs) without limiting any real cluster. */
const MAX_GPUS_PER_NODE = 16;
const MAX_NODES = 64;
const MAX_EPOCHS = 10_000;
const MAX_BATCH_SIZE = 65_536;

function fail(message: string): never {
  throw new FineTuneValidationError(`full fine-tune: ${message}`);
}

function finite(name: string, v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${name} must be a finite number, got ${String(v)}`);
  return v;
}

function integerIn(name: string, v: number, min: number, max: number): number {
  finite(name, v);
  if (!Number.isInteger(v) || v < min || v > max) fail(`${name} must be an integer in [${min}, ${max}], got ${v}`);
  return v;
}

function probability(name: string, v: number): number {
  finite(name, v);
  if (v < 0 || v > 1) fail(`${name} must be in [0, 1], got ${v}`);
  return v;
}

/** A Kubernetes namespace name (RFC 1123 label). */
export function isDns1123Label(s: string): boolean {
  return s.length >= 1 && s.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(s);
}

/** Fills the card's defaults and checks every field; throws FineTuneValidationError. */
export function resolveFullHyperparameters(hp: Hyperparameters): FullHyperparameters {
  const d = FULL_DEFAULTS;
  const learning_rate = finite('learning_rate', hp.learning_rate ?? d.learning_rate);
  if (learning_rate <= 0) fail(`learning_rate must be > 0, got ${learning_rate}`);
  const lr_schedule = hp.lr_schedule ?? d.lr_schedule;
  if (lr_schedule !== 'cosine')
    fail(`lr_schedule must be "cosine" (open_clip_train --lr-scheduler cosine), got ${JSON.stringify(lr_schedule)}`);
  const precision = hp.precision ?? d.precision;
  if (!(PRECISIONS as readonly string[]).includes(precision))
    fail(`precision must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(precision)}`);
  const jitter = hp.color_jitter ?? d.color_jitter;
  if (!Array.isArray(jitter) || jitter.length !== 4)
    fail(`color_jitter must be 4 numbers [brightness, contrast, saturation, hue], got ${JSON.stringify(jitter)}`);
  jitter.forEach((v, i) => {
    const name = `color_jitter[${i}]`;
    finite(name, v);
    if (v < 0) fail(`${name} must be >= 0, got ${v}`);
  });
  // torchvision ColorJitter: hue is a shift in [-h, h] with h <= 0.5.
  if (jitter[3] > 0.5) fail(`color_jitter hue must be <= 0.5 (torchvision ColorJitter), got ${jitter[3]}`);
  const weight_decay = finite('weight_decay', hp.weight_decay ?? d.weight_decay);
  if (weight_decay < 0) fail(`weight_decay must be >= 0, got ${weight_decay}`);
  const validation_split = probability('validation_split', hp.validation_split ?? d.validation_split);
  if (validation_split >= 1)
    fail(`validation_split must be < 1 (some pairs must remain for training), got ${validation_split}`);
  const namespace = hp.namespace === undefined || hp.namespace === '' ? undefined : hp.namespace;
  if (namespace !== undefined && !isDns1123Label(namespace))
    fail(`namespace ${JSON.stringify(namespace)} is not a valid Kubernetes namespace name`);
  const image = hp.image === undefined || hp.image === '' ? undefined : hp.image;
  if (image !== undefined && (/\s/.test(image) || image.length > 1024))
    fail(`image ${JSON.stringify(image)} is not a container image reference`);
  return {
    learning_rate,
    lr_schedule,
    warmup_steps: integerIn('warmup_steps', hp.warmup_steps ?? d.warmup_steps, 0, Number.MAX_SAFE_INTEGER),
    batch_size: integerIn('batch_size', hp.batch_size ?? d.batch_size, 1, MAX_BATCH_SIZE),
    epochs: integerIn('epochs', hp.epochs ?? d.epochs, 1, MAX_EPOCHS),
    precision,
    color_jitter: [jitter[0], jitter[1], jitter[2], jitter[3]],
    color_jitter_prob: probability('color_jitter_prob', hp.color_jitter_prob ?? d.color_jitter_prob),
    grayscale_prob: probability('grayscale_prob', hp.grayscale_prob ?? d.grayscale_prob),
    grad_checkpointing: hp.grad_checkpointing ?? d.grad_checkpointing,
    validation_split,
    seed: integerIn('seed', hp.seed ?? d.seed, 0, 2 ** 32 - 1),
    weight_decay,
    gpus_per_node: integerIn('gpus_per_node', hp.gpus_per_node ?? d.gpus_per_node, 1, MAX_GPUS_PER_NODE),
    nodes: integerIn('nodes', hp.nodes ?? d.nodes, 1, MAX_NODES),
    image,
    namespace,
  };
}
