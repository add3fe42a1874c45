/**
 * The `full` fine-tune method: the model card's recipe run where it belongs, as a Kubernetes Job
 * (torchrun + open_clip_train on GPUs), created and followed through the Kubernetes API; the
 * resulting trainer checkpoint is converted into a clipserve bundle with the convert code.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { convertCheckpoint } from '../../checkpoint/convert';
import { readCsvDataset } from '../../dataset/csv';
import { loadBundle, MANIFEST_FILE, parseManifest, type BundleManifest } from '../../model/bundle';
import {
  FineTuneCancelledError,
  FineTunePreconditionError,
  FineTuneValidationError,
  type FineTuneJobContext,
  type FineTuneJobPlan,
  type FineTuneMethod,
  type Hyperparameters,
} from '../method';
import { checkTrainableBase, prepareBaseModel } from './base-model';
import { resolveFullHyperparameters, type FullHyperparameters } from './hyperparameters';
import { KubeTrainingApi } from './kube-client';
import { buildTrainingManifests, type TrainingPodOptions, type TrainingStorage } from './manifests';
import { openClipTrainArgs } from './trainer-args';
import { parseTrainerLine, stepsPerEpoch } from './trainer-log';
import { prepareTrainingData } from './training-data';
import { runTrainingJob } from './job-runner';

export { resolveFullHyperparameters, FULL_DEFAULTS, type FullHyperparameters } from './hyperparameters';
export {
  buildTrainingManifests,
  trainingJobName,
  type TrainingManifests,
  type TrainingPodOptions,
  type TrainingStorage,
} from './manifests';
export { openClipTrainArgs, torchrunArgs, trainingCommand, augCfgArgs, HYPERPARAMETER_FLAGS } from './trainer-args';
export { KubeTrainingApi, KubernetesApiError, kubeClient } from './kube-client';
export { TrainingJobFailedError, SHUTDOWN_ABORT_REASON } from './job-runner';
export { loadKubeConfig } from './kube-config';

export interface FullMethodOptions {
  /** The cluster; null/undefined = none configured, and every `full` job fails validation. */
  kube?: KubeConfig | null;
  /** Default namespace (hyperparameters.namespace wins); else the kubeconfig context's, else "default". */
  namespace?: string;
  /** Default trainer image (hyperparameters.image wins). */
  image?: string;
  /** The ReadWriteMany volume holding the server's data dir, mounted at the same path in the trainer. */
  storage: TrainingStorage;
  pod?: TrainingPodOptions;
  /** DataLoader workers per GPU (--workers); default 4. */
  workersPerGpu?: number;
  /** Job status poll interval; default 5 s. */
  pollIntervalMs?: number;
  /** How long to wait for the last log lines after the Job ends; default 10 s. */
  logDrainMs?: number;
}

/** Where the trainer writes inside the job's work dir. */
const TRAINER_LOGS = 'trainer';
const RUN_NAME = 'run';

function insideDir(dir: string, p: string): boolean {
  const rel = path.relative(path.resolve(dir), path.resolve(p));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The newest epoch checkpoint the trainer saved (epoch_<epochs>.pt once it finished). */
function finalCheckpoint(checkpointDir: string, epochs: number): string {
  const expected = path.join(checkpointDir, `epoch_${epochs}.pt`);
  if (fs.existsSync(expected)) return expected;
  const found = fs.existsSync(checkpointDir)
    ? fs.readdirSync(checkpointDir).filter((f) => /^epoch_\d+\.pt$/.test(f))
    : [];
  throw new Error(
    `the training Job completed but ${expected} is missing` +
      (found.length
        ? ` (the trainer saved ${found.sort().join(', ')})`
        : ' (no checkpoints were saved: is the volume shared with the trainer?)'),
  );
}

/** The last validation summary the trainer appended to results.jsonl (the metrics of the new model). */
function finalResults(checkpointDir: string): Record<string, number> | undefined {
  const file = path.join(checkpointDir, 'results.jsonl');
  if (!fs.existsSync(file)) return undefined;
  const lines = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim());
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const row = JSON.parse(lines[i]) as Record<string, unknown>;
      const out: Record<string, number> = {};
      for (const [k, v] of Object.entries(row))
        if (typeof v === 'number' && Number.isFinite(v) && k !== 'epoch' && k !== 'num_samples') out[k] = v;
      return out;
    } catch {
      // A torn last line (the trainer killed mid-write): use the one before.
    }
  }
  return undefined;
}

/** The base bundle's manifest, read at CreateFineTuneJob (a small JSON file). */
function readManifest(bundleDir: string): BundleManifest {
  return parseManifest(JSON.parse(fs.readFileSync(path.join(bundleDir, MANIFEST_FILE), 'utf8')));
}

/** Training pairs per rank make at least one full batch (open_clip drops the last partial one). */
function checkBatches(trainPairs: number, hp: FullHyperparameters): number {
  const world = hp.nodes * hp.gpus_per_node;
  const perEpoch = stepsPerEpoch(trainPairs, hp.batch_size, world);
  if (perEpoch < 1) {
    throw new FineTuneValidationError(
      `full fine-tune: ${trainPairs} training pairs make no full batch of ${hp.batch_size} per GPU on ${world} GPU(s); lower batch_size or the GPU count`,
    );
  }
  return perEpoch;
}

export function createFullMethod(opts: FullMethodOptions): FineTuneMethod {
  const kube = opts.kube ?? null;
  const api = kube ? new KubeTrainingApi(kube) : null;

  const resolve = (hp: Hyperparameters): FullHyperparameters & { image: string; namespace: string } => {
    if (!kube) {
      throw new FineTunePreconditionError(
        'full fine-tune: no Kubernetes cluster is configured. The `full` method runs the trainer as a Kubernetes Job: ' +
          'run the server in the cluster (its ServiceAccount needs the clipserve-finetune Role) or give it a kubeconfig (KUBECONFIG); ' +
          'or use the `adapter` method, which trains inside the server',
      );
    }
    const r = resolveFullHyperparameters(hp);
    const image = r.image ?? opts.image;
    if (!image) {
      throw new FineTunePreconditionError(
        'full fine-tune: no trainer image: the server has no --finetune-image (CLIPSERVE_FINETUNE_IMAGE) and the job names none in hyperparameters.image ' +
          '(an image with torch and open_clip_train, e.g. the `trainer` target of deploy/docker/Dockerfile)',
      );
    }
    const contextNamespace = kube.getContextObject(kube.getCurrentContext())?.namespace;
    const namespace = r.namespace ?? opts.namespace ?? contextNamespace ?? 'default';
    return { ...r, image, namespace };
  };

  return {
    name: 'full',
    validate(hp: Hyperparameters): void {
      resolve(hp);
    },
    checkJob(plan: FineTuneJobPlan): void {
      const hp = resolve(plan.hyperparameters);
      let manifest: BundleManifest;
      try {
        manifest = readManifest(plan.baseModel.bundleDir);
      } catch (err) {
        throw new FineTunePreconditionError(
          `full fine-tune: cannot read base model ${plan.baseModel.version} (${plan.baseModel.bundleDir}): ${(err as Error).message}`,
        );
      }
      checkTrainableBase(plan.baseModel.version, manifest);
      const held = plan.validationPairs !== undefined ? 0 : Math.floor(plan.trainingPairs * hp.validation_split);
      checkBatches(plan.trainingPairs - held, hp);
    },
    async run(ctx: FineTuneJobContext): Promise<{ bundleDir: string; metrics?: Record<string, number> }> {
      const hp = resolve(ctx.hyperparameters);
      if (ctx.signal.aborted) throw new FineTuneCancelledError();
      const mount = opts.storage.mountPath;
      for (const [what, p] of [
        ['dataset', ctx.datasetDir],
        ['work dir', ctx.workDir],
      ] as const) {
        if (!insideDir(mount, p))
          throw new FineTuneValidationError(
            `full fine-tune: the ${what} ${p} is not on the volume shared with the trainer (${opts.storage.pvcName} at ${mount})`,
          );
      }
      const base = await loadBundle(ctx.baseModel.bundleDir, { verify: false });
      checkTrainableBase(ctx.baseModel.version, base.manifest);
      const data = prepareTrainingData({
        datasetDir: ctx.datasetDir,
        outDir: path.join(ctx.workDir, 'data'),
        validationSplit: hp.validation_split,
        seed: hp.seed,
      });
      const world = hp.nodes * hp.gpus_per_node;
      const perEpoch = checkBatches(data.trainPairs, hp);
      const baseModelDir = await prepareBaseModel({
        version: ctx.baseModel.version,
        bundleDir: ctx.baseModel.bundleDir,
        manifest: base.manifest,
        dataDir: mount,
        signal: ctx.signal,
        emit: (e) => ctx.emit(e),
      });
      if (ctx.signal.aborted) throw new FineTuneCancelledError();
      const totalSteps = perEpoch * hp.epochs;
      const logsDir = path.join(ctx.workDir, TRAINER_LOGS);
      fs.mkdirSync(logsDir, { recursive: true });
      const trainerArgs = openClipTrainArgs(hp, {
        trainData: data.trainFile,
        valData: data.valFile,
        logsDir,
        runName: RUN_NAME,
        baseModelDir,
        workers: opts.workersPerGpu ?? 4,
      });
      const manifests = buildTrainingManifests({
        jobId: ctx.jobId,
        namespace: hp.namespace,
        image: hp.image,
        hp,
        trainerArgs,
        storage: opts.storage,
        pod: opts.pod,
      });
      ctx.emit({
        type: 'log',
        message: `training on ${hp.nodes} node(s) x ${hp.gpus_per_node} GPU(s): ${data.trainPairs} training / ${data.valPairs} validation pairs, ${totalSteps} steps`,
        data: {
          train_pairs: data.trainPairs,
          validation_pairs: data.valPairs,
          total_steps: totalSteps,
          global_batch_size: hp.batch_size * world,
          base_model_dir: baseModelDir,
        },
      });

      let lastEval: Record<string, number> | undefined;
      await runTrainingJob({
        api: api!,
        jobId: ctx.jobId,
        namespace: hp.namespace,
        manifests,
        signal: ctx.signal,
        emit: (e) => ctx.emit(e),
        pollIntervalMs: opts.pollIntervalMs,
        logDrainMs: opts.logDrainMs,
        onLogLine: (line) => {
          const parsed = parseTrainerLine(line);
          if (!parsed) return;
          if (parsed.kind === 'step') {
            const stepInEpoch = Math.round(parsed.samples / (hp.batch_size * world));
            const step = parsed.epoch * perEpoch + stepInEpoch;
            ctx.emit({
              type: 'step',
              data: {
                step,
                total_steps: totalSteps,
                epoch: parsed.epoch,
                ...(parsed.loss !== undefined ? { loss: parsed.loss } : {}),
                ...(parsed.learningRate !== undefined ? { learning_rate: parsed.learningRate } : {}),
              },
            });
          } else {
            lastEval = parsed.metrics;
            ctx.emit({ type: 'epoch', data: { epoch: parsed.epoch, metrics: parsed.metrics } });
          }
        },
      });
      if (ctx.signal.aborted) throw new FineTuneCancelledError();

      const checkpointDir = path.join(logsDir, RUN_NAME, 'checkpoints');
      const checkpoint = finalCheckpoint(checkpointDir, hp.epochs);
      // The trainer's epoch_N.pt has no config beside it: the base model's config is the new one's.
      const configFile = path.join(ctx.workDir, 'open_clip_config.json');
      fs.writeFileSync(
        configFile,
        JSON.stringify({ model_cfg: base.manifest.model_cfg, preprocess_cfg: base.manifest.preprocess_cfg }, null, 2),
      );
      const bundleDir = path.join(ctx.workDir, 'bundle');
      // A resumed job (the server restarted after converting) converts again: the work dir is this job's alone.
      fs.rmSync(bundleDir, { recursive: true, force: true });
      ctx.emit({ type: 'log', message: `converting ${path.basename(checkpoint)} into a bundle`, data: { checkpoint } });
      await convertCheckpoint({
        input: checkpoint,
        outDir: bundleDir,
        config: configFile,
        vocab: base.paths.vocab,
        name: base.manifest.name,
        version: ctx.outputVersion,
        precision: base.manifest.precision,
        // An int8 version calibrates on the pairs it was trained on: the data it will serve.
        ...(base.manifest.precision === 'int8' && {
          int8Settings: {
            data: { pairs: readCsvDataset(data.trainFile), source: `fine-tune job ${ctx.jobId} (its training pairs)` },
          },
        }),
        provenance: {
          fine_tune_job: ctx.jobId,
          fine_tune_method: 'full',
          base_version: ctx.baseModel.version,
          kubernetes_job: `${hp.namespace}/${manifests.job.metadata!.name}`,
        },
      });
      if (ctx.signal.aborted) throw new FineTuneCancelledError();
      const metrics = finalResults(checkpointDir) ?? lastEval;
      return { bundleDir, ...(metrics ? { metrics } : {}) };
    },
  };
}
