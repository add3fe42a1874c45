/**
 * The base model as open_clip_train loads it: a directory on the volume shared with the trainer
 * holding `open_clip_config.json` (the bundle's own model_cfg and preprocess_cfg) and the weights,
 * passed as `--model local-dir:<dir>` — open_clip's own way to load a model from a folder, which
 * works for every architecture clipserve serves, not only those with a built-in open_clip name.
 *
 * Where the weights come from, for every way a model can be configured:
 *  - the checkpoint its bundle was converted from (`convert`, `pull` from the hub, a `full`
 *    fine-tune's epoch_N.pt), when still there: a safetensors file is hard-linked onto the volume
 *    (copied from another filesystem); a torch.save file is rewritten as safetensors (its state
 *    dict only: no optimizer state, no pickle for the trainer to unpickle);
 *  - otherwise (a random-init or `adapter` fine-tuned bundle, or a source that is gone) exported
 *    from the bundle's own ONNX weights into safetensors.
 * Reading and writing weights happens in a worker thread.
 * Prepared once per distinct set of bundle weights under <data dir>/base-models/ and reused.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BundleManifest } from '../../model/bundle';
import { compiledModule } from '../../util/paths';
import { FineTuneCancelledError, FineTunePreconditionError, type FineTuneMethodEvent } from '../method';

export const BASE_MODELS_DIR = 'base-models';
export const OPEN_CLIP_CONFIG_FILE = 'open_clip_config.json';
/** Names open_clip's local-dir loader looks for first (factory._find_checkpoint_in_dir). */
export const SAFETENSORS_WEIGHTS = 'open_clip_model.safetensors';
/** open_clip_train tokenizes with open_clip's bundled CLIP BPE vocabulary (49408 tokens). */
export const OPEN_CLIP_VOCAB_SIZE = 49408;

export type BaseWeightsSource = { kind: 'safetensors' | 'torch'; file: string } | { kind: 'bundle' };

/** Where the weights will come from; cheap (a stat), so CreateFineTuneJob can call it. */
export function baseWeightsSource(manifest: BundleManifest): BaseWeightsSource {
  const file = typeof manifest.source.weights === 'string' ? manifest.source.weights : undefined;
  const format = manifest.source.format;
  if (file && (format === 'safetensors' || format === 'torch-zip')) {
    try {
      if (fs.statSync(file).isFile()) return { kind: format === 'safetensors' ? 'safetensors' : 'torch', file };
    } catch {
      // Gone since the conversion: the bundle's own weights are exported instead.
    }
  }
  return { kind: 'bundle' };
}

/** Refuses, before a job is accepted, a base model the trainer cannot start from. */
export function checkTrainableBase(version: string, manifest: BundleManifest): void {
  const vocab = manifest.model_cfg.text_cfg.vocab_size;
  if (vocab !== OPEN_CLIP_VOCAB_SIZE) {
    throw new FineTunePreconditionError(
      `full fine-tune: base model ${version} has a ${vocab}-token vocabulary; open_clip_train tokenizes with open_clip's CLIP BPE vocabulary ` +
        `(${OPEN_CLIP_VOCAB_SIZE} tokens), so only models with that vocabulary can be trained with the full method (the adapter method has no such limit)`,
    );
  }
}

/** One directory per distinct set of weights (the manifest's file checksums) and preprocessing. */
function baseDirName(manifest: BundleManifest): string {
  const key = createHash('sha256')
    .update(JSON.stringify([manifest.files, manifest.model_cfg, manifest.preprocess_cfg, manifest.logit_scale]))
    .digest('hex')
    .slice(0, 16);
  const name = manifest.name.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 60) || 'model';
  return `${name}-${key}`;
}

/** What the export worker writes from (export-worker.ts). */
export type ExportSource = { kind: 'bundle'; bundleDir: string } | { kind: 'torch'; file: string };

function exportInWorker(source: ExportSource, outFile: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new FineTuneCancelledError());
    const worker = new Worker(compiledModule('finetune/full/export-worker'), { workerData: { source, outFile } });
    const onAbort = (): void => void worker.terminate();
    signal.addEventListener('abort', onAbort, { once: true });
    let result: { ok: boolean; message?: string } | undefined;
    worker.on('message', (m: { ok: boolean; message?: string }) => (result = m));
    worker.on('error', (err) => (result = { ok: false, message: err.message }));
    worker.on('exit', () => {
      signal.removeEventListener('abort', onAbort);
      if (signal.aborted) return reject(new FineTuneCancelledError());
      if (result?.ok) return resolve();
      reject(
        new Error(
          `cannot write the base model's weights for the trainer: ${result?.message ?? 'the export worker stopped'}`,
        ),
      );
    });
  });
}

async function placeCheckpoint(file: string, dest: string): Promise<'linked' | 'copied'> {
  // The hub cache's snapshot files are symlinks to its blobs, and link(2) does not follow them:
  // link the blob itself, or the trainer would get a link pointing off its volume.
  const src = await fs.promises.realpath(file);
  try {
    await fs.promises.link(src, dest);
    return 'linked';
  } catch {
    // Another filesystem (the hub cache, a models volume): copy, in libuv's thread pool.
    await fs.promises.copyFile(src, dest);
    return 'copied';
  }
}

/**
 * Makes sure <dataDir>/base-models/<name>-<key>/ holds the base model for open_clip_train and
 * returns it. Built under a temporary name and renamed into place, so a directory that exists is
 * complete; concurrent preparations of the same model (replicas) each build and the first rename wins.
 */
export async function prepareBaseModel(o: {
  version: string;
  bundleDir: string;
  manifest: BundleManifest;
  dataDir: string;
  signal: AbortSignal;
  emit(e: FineTuneMethodEvent): void;
}): Promise<string> {
  const root = path.join(o.dataDir, BASE_MODELS_DIR);
  const dir = path.join(root, baseDirName(o.manifest));
  if (fs.existsSync(path.join(dir, OPEN_CLIP_CONFIG_FILE))) return dir;
  fs.mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
  fs.mkdirSync(tmp);
  try {
    const source = baseWeightsSource(o.manifest);
    const weights = path.join(tmp, SAFETENSORS_WEIGHTS);
    if (source.kind === 'safetensors') {
      const how = await placeCheckpoint(source.file, weights);
      o.emit({
        type: 'log',
        message: `base model ${o.version}: ${how} ${source.file} for the trainer`,
        data: { base_weights: source.file, how },
      });
    } else if (source.kind === 'torch') {
      o.emit({
        type: 'log',
        message: `base model ${o.version}: rewriting the state dict of ${source.file} as safetensors for the trainer`,
        data: { base_weights: source.file, how: 'rewritten' },
      });
      await exportInWorker({ kind: 'torch', file: source.file }, weights, o.signal);
    } else {
      o.emit({
        type: 'log',
        message: `base model ${o.version}: exporting the bundle's weights for the trainer (no checkpoint file of them is left)`,
        data: { base_weights: 'bundle', how: 'exported' },
      });
      await exportInWorker({ kind: 'bundle', bundleDir: o.bundleDir }, weights, o.signal);
    }
    if (o.signal.aborted) throw new FineTuneCancelledError();
    const config = { model_cfg: o.manifest.model_cfg, preprocess_cfg: o.manifest.preprocess_cfg };
    fs.writeFileSync(path.join(tmp, OPEN_CLIP_CONFIG_FILE), JSON.stringify(config, null, 2));
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      if (!fs.existsSync(path.join(dir, OPEN_CLIP_CONFIG_FILE))) throw err;
    }
    return dir;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
