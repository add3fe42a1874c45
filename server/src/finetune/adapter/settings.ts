/**
 * The adapter method's hyperparameters: the model card's names, with defaults suited to training
 * a small linear adapter on frozen features (a much larger learning rate than the card's 5e-6,
 * which is for updating the whole network) and the card's augmentations.
 */
import { FineTuneValidationError, PRECISIONS, type Hyperparameters } from '../method';
import type { TrainSettings } from './train-loop';

/** The training loop's settings plus the split and the augmentations, used before training. */
export interface AdapterSettings extends TrainSettings {
  validationSplit: number;
  colorJitter: [number, number, number, number];
  colorJitterProb: number;
  grayscaleProb: number;
}

export const ADAPTER_DEFAULTS: AdapterSettings = {
  learningRate: 1e-3,
  warmupSteps: 10,
  batchSize: 64,
  epochs: 10,
  weightDecay: 0,
  seed: 0,
  validationSplit: 0.1,
  colorJitter: [0.2, 0.2, 0.1, 0.0],
  colorJitterProb: 0.7,
  grayscaleProb: 0.2,
};

const FULL_ONLY = ['gpus_per_node', 'nodes', 'image', 'namespace'] as const;

function check(cond: boolean, message: string): void {
  if (!cond) throw new FineTuneValidationError(message);
}

/** Validates `hp` for the adapter method and fills in the defaults. */
export function resolveAdapterSettings(hp: Hyperparameters): AdapterSettings {
  for (const k of FULL_ONLY) check(hp[k] === undefined, `hyperparameter ${k} applies only to the "full" method`);
  const s: AdapterSettings = {
    learningRate: hp.learning_rate ?? ADAPTER_DEFAULTS.learningRate,
    warmupSteps: hp.warmup_steps ?? ADAPTER_DEFAULTS.warmupSteps,
    batchSize: hp.batch_size ?? ADAPTER_DEFAULTS.batchSize,
    epochs: hp.epochs ?? ADAPTER_DEFAULTS.epochs,
    weightDecay: hp.weight_decay ?? ADAPTER_DEFAULTS.weightDecay,
    seed: hp.seed ?? ADAPTER_DEFAULTS.seed,
    validationSplit: hp.validation_split ?? ADAPTER_DEFAULTS.validationSplit,
    colorJitter: hp.color_jitter ?? ADAPTER_DEFAULTS.colorJitter,
    colorJitterProb: hp.color_jitter_prob ?? ADAPTER_DEFAULTS.colorJitterProb,
    grayscaleProb: hp.grayscale_prob ?? ADAPTER_DEFAULTS.grayscaleProb,
  };
  check(
    Number.isFinite(s.learningRate) && s.learningRate > 0 && s.learningRate <= 1,
    `learning_rate must be in (0, 1], got ${s.learningRate}`,
  );
  check(
    hp.lr_schedule === undefined || hp.lr_schedule === 'cosine',
    `lr_schedule must be "cosine", got ${JSON.stringify(hp.lr_schedule)}`,
  );
  check(
    Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0,
    `warmup_steps must be a non-negative integer, got ${s.warmupSteps}`,
  );
  check(
    Number.isInteger(s.batchSize) && s.batchSize >= 2 && s.batchSize <= 65536,
    `batch_size must be an integer in [2, 65536], got ${s.batchSize}`,
  );
  check(
    Number.isInteger(s.epochs) && s.epochs >= 1 && s.epochs <= 10000,
    `epochs must be an integer in [1, 10000], got ${s.epochs}`,
  );
  check(Number.isFinite(s.weightDecay) && s.weightDecay >= 0, `weight_decay must be >= 0, got ${s.weightDecay}`);
  check(
    Number.isInteger(s.seed) && s.seed >= 0 && s.seed < 2 ** 32,
    `seed must be an integer in [0, 2^32), got ${s.seed}`,
  );
  check(
    Number.isFinite(s.validationSplit) && s.validationSplit > 0 && s.validationSplit < 1,
    `validation_split must be in (0, 1), got ${s.validationSplit}`,
  );
  check(
    Array.isArray(s.colorJitter) &&
      s.colorJitter.length === 4 &&
      s.colorJitter.every((v) => Number.isFinite(v) && v >= 0),
    `color_jitter must be four non-negative numbers [brightness, contrast, saturation, hue], got ${JSON.stringify(s.colorJitter)}`,
  );
  check(s.colorJitter[3] <= 0.5, `color_jitter hue must be in [0, 0.5], got ${s.colorJitter[3]}`);
  for (const [name, v] of [
    ['color_jitter_prob', s.colorJitterProb],
    ['grayscale_prob', s.grayscaleProb],
  ] as const) {
    check(Number.isFinite(v) && v >= 0 && v <= 1, `${name} must be in [0, 1], got ${v}`);
  }
  check(
    hp.precision === undefined || (PRECISIONS as readonly string[]).includes(hp.precision),
    `precision must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(hp.precision)}`,
  );
  return s;
}
