/**
 * The training command: torchrun launching OpenCLIP's training entry point
 * (`python -m open_clip_train.main`), one process per GPU. Every hyperparameter maps to exactly one
 * open_clip_train flag (src/open_clip_train/params.py); the flags used are ones every open_clip
 * 2.x/3.x trainer accepts, because an unknown flag stops argparse before training starts.
 */
import type { FullHyperparameters } from './hyperparameters';

export interface TrainerInputs {
  /** CSV (tab-separated, `filepath` / `title` columns, absolute image paths). */
  trainData: string;
  valData?: string;
  /** --logs: the trainer writes <logs>/<name>/checkpoints/epoch_N.pt and out.log there. */
  logsDir: string;
  runName: string;
  /** The base model for open_clip (base-model.ts): open_clip_config.json (architecture and
   *  preprocessing) + weights, loaded with `--model local-dir:<dir>`. */
  baseModelDir: string;
  /** DataLoader workers per GPU (--workers). */
  workers: number;
}

/** The open_clip / open_clip_train commit these arguments are verified against (the trainer
 *  image of deploy/docker/Dockerfile installs it; test/e2e/finetune/full-trainer.test.ts runs it). */
export const OPEN_CLIP_TRAIN_COMMIT = '89fb801f1e6087880e951fc8354b8a2077b79c6d';

/** Port of the torch.distributed TCP store on node 0 (torchrun's --master_port). */
export const RENDEZVOUS_PORT = 29500;

/** The hyperparameter → open_clip_train flag table (one flag each). */
export const HYPERPARAMETER_FLAGS = {
  learning_rate: '--lr',
  lr_schedule: '--lr-scheduler',
  warmup_steps: '--warmup',
  batch_size: '--batch-size',
  epochs: '--epochs',
  precision: '--precision',
  color_jitter: '--aug-cfg',
  color_jitter_prob: '--aug-cfg',
  grayscale_prob: '--aug-cfg',
  grad_checkpointing: '--grad-checkpointing',
  seed: '--seed',
  weight_decay: '--wd',
} as const;

/** A number as Python's float()/ast.literal_eval read it back exactly (JS shortest round-trip form). */
function num(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`not a finite number: ${v}`);
  return String(v);
}

/**
 * open_clip_train's `--aug-cfg key=value ...`: each value goes through ast.literal_eval, so the
 * jitter is a Python tuple literal (no spaces: each key=value must stay one argv element).
 */
export function augCfgArgs(
  hp: Pick<FullHyperparameters, 'color_jitter' | 'color_jitter_prob' | 'grayscale_prob'>,
): string[] {
  return [
    `color_jitter=(${hp.color_jitter.map(num).join(',')})`,
    `color_jitter_prob=${num(hp.color_jitter_prob)}`,
    `gray_scale_prob=${num(hp.grayscale_prob)}`,
  ];
}

/** Arguments of `python -m open_clip_train.main`. */
export function openClipTrainArgs(hp: FullHyperparameters, inputs: TrainerInputs): string[] {
  const args = [
    '--train-data',
    inputs.trainData,
    ...(inputs.valData ? ['--val-data', inputs.valData, '--val-frequency', '1'] : []),
    '--dataset-type',
    'csv',
    '--csv-separator',
    '\t',
    '--csv-img-key',
    'filepath',
    '--csv-caption-key',
    'title',
    // open_clip's own loader for a model folder: the base's exact architecture, preprocessing and
    // weights, for any architecture (--pretrained is for built-in names and ignored with a schema).
    '--model',
    `local-dir:${inputs.baseModelDir}`,
    '--lr',
    num(hp.learning_rate),
    '--lr-scheduler',
    hp.lr_schedule,
    '--warmup',
    String(hp.warmup_steps),
    '--wd',
    num(hp.weight_decay),
    '--batch-size',
    String(hp.batch_size),
    '--epochs',
    String(hp.epochs),
    '--precision',
    hp.precision,
    '--aug-cfg',
    ...augCfgArgs(hp),
    ...(hp.grad_checkpointing ? ['--grad-checkpointing'] : []),
    '--seed',
    String(hp.seed),
    '--workers',
    String(inputs.workers),
    '--logs',
    inputs.logsDir,
    '--name',
    inputs.runName,
    // A checkpoint per epoch and resume from the newest: a restarted pod continues, not restarts.
    '--save-frequency',
    '1',
    '--resume',
    'latest',
    // No ImageNet zero-shot set here; validation is the held-out pairs (--val-data).
    '--zeroshot-frequency',
    '0',
    '--dist-backend',
    'nccl',
    '--dist-url',
    'env://',
  ];
  return args;
}

export interface LaunchShape {
  nodes: number;
  gpusPerNode: number;
  /** Node 0's stable DNS name (Indexed Job pod behind the headless Service); needed when nodes > 1. */
  masterAddr?: string;
}

/**
 * torchrun's own arguments. One node: --standalone (a local rendezvous). Several: static
 * rendezvous at node 0 with this pod's rank taken from the Indexed Job's completion index, which
 * the kubelet substitutes for $(JOB_COMPLETION_INDEX) from the container's environment.
 */
export function torchrunArgs(shape: LaunchShape): string[] {
  if (shape.nodes === 1) return ['--standalone', '--nnodes=1', `--nproc_per_node=${shape.gpusPerNode}`];
  if (!shape.masterAddr) throw new Error('torchrunArgs: masterAddr is required for more than one node');
  return [
    `--nnodes=${shape.nodes}`,
    `--nproc_per_node=${shape.gpusPerNode}`,
    '--node_rank=$(JOB_COMPLETION_INDEX)',
    `--master_addr=${shape.masterAddr}`,
    `--master_port=${RENDEZVOUS_PORT}`,
  ];
}

/** Kubernetes expands $(VAR) in container args; `$$(` keeps a literal `$(` (e.g. in a path). */
export function escapeKubeExpansion(arg: string): string {
  return arg.replace(/\$\(/g, '$$$$(');
}

/** The container's full command line: torchrun <launch args> -m open_clip_train.main <trainer args>. */
export function trainingCommand(shape: LaunchShape, trainerArgs: string[]): { command: string[]; args: string[] } {
  return {
    command: ['torchrun'],
    args: [...torchrunArgs(shape), '-m', 'open_clip_train.main', ...trainerArgs.map(escapeKubeExpansion)],
  };
}
