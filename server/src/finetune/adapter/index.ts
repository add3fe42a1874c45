/**
 * The `adapter` fine-tune method, run inside the service: frozen encoders, features of the
 * training set computed once (with the configured augmentations), a residual linear adapter per
 * tower trained with CLIP's symmetric InfoNCE loss at the model's temperature in a worker thread,
 * validation metrics before and after (open_clip's get_clip_metrics), and a new bundle with the
 * adapters folded into the projections. Resumable: features and per-epoch checkpoints live in the
 * job's directory.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadBundle } from '../../model/bundle';
import { loadModel, type RuntimeOptions } from '../../runtime/model';
import { compiledModule } from '../../util/paths';
import { readDatasetRows, VALIDATION_FILE, type DatasetRow } from '../dataset';
import { FineTuneCancelledError, type FineTuneJobContext, type FineTuneMethod, type Hyperparameters } from '../method';
import { augmentationEnabled } from '../../preprocess/augment';
import { computeFeatures, loadFeatures, saveFeatures } from './features';
import type { FoldBundleJob, FoldBundleReply } from './bundle-worker';
import { permutation, seededRandom } from './math';
import { resolveAdapterSettings, type AdapterSettings } from './settings';
import { loadCheckpoint, stepsPerEpoch, type TrainInput } from './train-loop';
import type { TrainerMessage } from './trainer-worker';

export { resolveAdapterSettings };

export const CHECKPOINT_FILE = 'adapter.ckpt';
export const FEATURES_FILE = 'features.bin';
export const OUTPUT_BUNDLE_DIR = 'bundle';

export interface AdapterMethodOptions {
  dataDir: string;
  /** The feature extractor's runtime (its imageLimits: the serving decoder's, applied to training
   *  images too); it always runs at low priority (see loadModel). */
  runtime?: RuntimeOptions;
}

/** Train/validation rows: a separate validation file when the dataset has one, else a seeded split. */
export function splitRows(
  datasetDir: string,
  dataDir: string,
  s: AdapterSettings,
): { train: DatasetRow[]; validation: DatasetRow[] } {
  const rows = readDatasetRows(datasetDir, dataDir);
  if (fs.existsSync(path.join(datasetDir, VALIDATION_FILE)))
    return { train: rows, validation: readDatasetRows(datasetDir, dataDir, VALIDATION_FILE) };
  const nVal = Math.round(rows.length * s.validationSplit);
  if (nVal < 2 || rows.length - nVal < 2) {
    throw new Error(
      `validation_split ${s.validationSplit} of ${rows.length} pairs leaves ${nVal} for validation and ${rows.length - nVal} for training; both need at least 2`,
    );
  }
  const order = permutation(rows.length, seededRandom(s.seed ^ 0x5eed));
  const val = new Set(Array.from(order.subarray(0, nVal)));
  return { train: rows.filter((_, i) => !val.has(i)), validation: rows.filter((_, i) => val.has(i)) };
}

function round(metrics: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(metrics).map(([k, v]) => [k, Math.round(v * 1e6) / 1e6]));
}

/** Trains in a worker thread (validation metrics before and after included); terminating it on
 *  abort frees its memory at once. */
function trainInWorker(
  input: TrainInput,
  ctx: FineTuneJobContext,
): Promise<{
  wImage: Float64Array;
  wText: Float64Array;
  metrics: Record<string, number>;
  before: Record<string, number>;
}> {
  return new Promise((resolve, reject) => {
    if (ctx.signal.aborted) return reject(new FineTuneCancelledError());
    const worker = new Worker(compiledModule('finetune/adapter/trainer-worker'), { workerData: input });
    let settled = false;
    let before: Record<string, number> = {};
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      ctx.signal.removeEventListener('abort', onAbort);
      fn();
    };
    const onAbort = () =>
      finish(() => {
        void worker.terminate();
        reject(new FineTuneCancelledError());
      });
    ctx.signal.addEventListener('abort', onAbort);
    worker.on('message', (m: TrainerMessage) => {
      if (settled) return; // progress still in flight from a terminated trainer
      if (m.type === 'before') {
        before = round({ ...m.metrics });
        ctx.emit({
          type: 'log',
          message: `validation before training: text→image R@1 ${percent(before['text_to_image_R@1'])}, image→text R@1 ${percent(before['image_to_text_R@1'])}`,
          data: { metrics_before: before },
        });
      } else if (m.type === 'progress') {
        const p = m.progress;
        if (p.type === 'step')
          ctx.emit({
            type: 'step',
            data: {
              step: p.step,
              total_steps: p.totalSteps,
              epoch: p.epoch,
              loss: p.loss,
              learning_rate: p.learningRate,
            },
          });
        else
          ctx.emit({
            type: 'epoch',
            message: `epoch ${p.epoch}: train loss ${p.trainLoss.toFixed(4)}, validation text→image R@1 ${percent(p.metrics['text_to_image_R@1'])}`,
            data: { epoch: p.epoch, step: p.step, train_loss: p.trainLoss, metrics: round({ ...p.metrics }) },
          });
      } else if (m.type === 'done')
        finish(() => resolve({ wImage: m.wImage, wText: m.wText, metrics: round({ ...m.metrics }), before }));
      else finish(() => reject(new Error(`adapter training failed: ${m.message}`)));
    });
    worker.on('error', (err) => finish(() => reject(err)));
    worker.on('exit', (code) =>
      finish(() => reject(new Error(`adapter trainer exited with code ${code} before finishing`))),
    );
  });
}

/** A recall as the job table prints it: 0.25 → "25.00%". */
const percent = (v: number): string => `${(100 * v).toFixed(2)}%`;

/** Folds and writes the new bundle in a worker thread (see bundle-worker). A cancel terminates
 *  the worker: for an int8 base the write includes calibration, which can run for many minutes,
 *  and a cancelled job must stop costing CPU. The writer works in a temp sibling of `outDir`
 *  (model/bundle writeBundle), which is removed here. */
function writeFoldedBundle(job: FoldBundleJob, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new FineTuneCancelledError());
    const worker = new Worker(compiledModule('finetune/adapter/bundle-worker'), { workerData: job });
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', cancel);
      fn();
    };
    const cancel = () =>
      finish(() => {
        void worker
          .terminate()
          .then(() => {
            const dir = path.dirname(job.outDir);
            const prefix = `${path.basename(job.outDir)}.tmp-`;
            for (const f of fs.readdirSync(dir))
              if (f.startsWith(prefix)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
          })
          .catch(() => undefined); // best effort: the job's work dir goes with it later
        reject(new FineTuneCancelledError());
      });
    signal.addEventListener('abort', cancel, { once: true });
    worker.on('message', (m: FoldBundleReply) =>
      finish(() => (m.ok ? resolve() : reject(new Error(`writing the new model version failed: ${m.message}`)))),
    );
    worker.on('error', (err) => finish(() => reject(err)));
    worker.on('exit', (code) =>
      finish(() => reject(new Error(`the bundle writer exited with code ${code} before finishing`))),
    );
  });
}

export function createAdapterMethod(opts: AdapterMethodOptions): FineTuneMethod {
  return {
    name: 'adapter',
    failedJobLeftovers: [
      FEATURES_FILE,
      `${FEATURES_FILE}.tmp`,
      CHECKPOINT_FILE,
      `${CHECKPOINT_FILE}.tmp`,
      OUTPUT_BUNDLE_DIR,
    ],
    validate(hp: Hyperparameters): void {
      resolveAdapterSettings(hp);
    },
    async run(ctx: FineTuneJobContext) {
      const s = resolveAdapterSettings(ctx.hyperparameters);
      const { train: trainRows, validation: valRows } = splitRows(ctx.datasetDir, opts.dataDir, s);
      const base = await loadBundle(ctx.baseModel.bundleDir);
      const d = base.manifest.embed_dim;
      const scale = base.manifest.logit_scale_exp;
      const augment = {
        colorJitter: s.colorJitter,
        colorJitterProb: s.colorJitterProb,
        grayscaleProb: s.grayscaleProb,
      };
      // Cached features are reused only for the same rows, base model and augmentations.
      const featureKey = createHash('sha256')
        .update(
          JSON.stringify({
            base: base.manifest.files.visual.sha256,
            text: base.manifest.files.textual.sha256,
            augment,
            seed: s.seed,
            train: trainRows.map((r) => [r.image, r.caption]),
            val: valRows.map((r) => [r.image, r.caption]),
          }),
        )
        .digest('hex');
      const featuresFile = path.join(ctx.workDir, FEATURES_FILE);
      let features = loadFeatures(featuresFile, featureKey, d);
      if (features)
        ctx.emit({
          type: 'log',
          message: `reusing the features computed before (${trainRows.length} training, ${valRows.length} validation pairs)`,
        });
      else {
        ctx.emit({
          type: 'log',
          message: `computing frozen features of ${trainRows.length} training and ${valRows.length} validation pairs with ${base.manifest.name} ${base.manifest.version}`,
        });
        // Low priority, few threads: the server's own inference and decoding keep the cores first.
        const model = await loadModel(ctx.baseModel.bundleDir, {
          preprocessWorkers: 1,
          intraOpThreads: 1,
          ...opts.runtime,
          lowPriority: true,
        });
        try {
          const train = await computeFeatures(model, trainRows, {
            augment: augmentationEnabled(augment) ? augment : undefined,
            seed: s.seed,
            signal: ctx.signal,
          });
          const validation = await computeFeatures(model, valRows, { seed: s.seed, signal: ctx.signal });
          features = { train, validation };
        } finally {
          await model.close();
        }
        saveFeatures(featuresFile, featureKey, d, features.train, features.validation);
      }
      const checkpointPath = path.join(ctx.workDir, CHECKPOINT_FILE);
      const resumed = loadCheckpoint(checkpointPath, d * d);
      const total = stepsPerEpoch(features.train.n, s.batchSize) * s.epochs;
      if (resumed)
        ctx.emit({
          type: 'log',
          message: `resuming from the checkpoint after epoch ${resumed.epoch} (step ${resumed.step} of ${total})`,
        });
      const trained = await trainInWorker(
        {
          d,
          scale,
          train: features.train,
          validation: features.validation,
          settings: s,
          checkpointPath,
        },
        ctx,
      );
      const after = trained.metrics;

      if (ctx.signal.aborted) throw new FineTuneCancelledError();
      const outDir = path.join(ctx.workDir, OUTPUT_BUNDLE_DIR);
      fs.rmSync(outDir, { recursive: true, force: true }); // a half-written one from before a crash
      ctx.emit({ type: 'log', message: 'writing the new model version (adapters folded into the projections)' });
      await writeFoldedBundle(
        {
          baseDir: ctx.baseModel.bundleDir,
          outDir,
          version: ctx.outputVersion,
          wImage: trained.wImage,
          wText: trained.wText,
          source: { kind: 'fine-tune', method: 'adapter', job: ctx.jobId, base_version: ctx.baseModel.version },
          ...(base.manifest.precision === 'int8' && {
            calibration: {
              pairs: trainRows.map((r) => ({ image: r.image, caption: r.caption })),
              source: `fine-tune job ${ctx.jobId} (its training pairs)`,
            },
          }),
        },
        ctx.signal,
      );
      const before = trained.before;
      ctx.emit({
        type: 'report',
        message: `text→image R@1 ${percent(before['text_to_image_R@1'])} → ${percent(after['text_to_image_R@1'])}`,
        data: { metrics_before: before, metrics_after: after },
      });
      return { bundleDir: outDir, metrics: after };
    },
  };
}
