/**
 * Checkpoint loading: one entry point for every weights format an OpenCLIP model ships in, and
 * `readOpenClipDir` for a model directory (hub layout: open_clip_config.json + weights).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveConfig, type OpenClipConfig } from '../model/config';
import type { StateDict } from '../model/state-dict';
import { CheckpointError } from './errors';
import { checkStateDictMatchesConfig } from './expected-keys';
import type { ReadProgress } from './progress';
import { readSafetensors } from './safetensors';
import { findStateDictObject, normalizeStateDict } from './state-dict-keys';
import { looksLikeZip, materialize, openTorchArchive, TorchTensorRef } from './torch-zip';

export { CheckpointError } from './errors';
export { PickleError } from './pickle';
export { expectedStateDictShapes, checkStateDictMatchesConfig } from './expected-keys';
export type { ReadProgress } from './progress';

export type CheckpointFormat = 'safetensors' | 'torch-zip';

export const CONFIG_FILE = 'open_clip_config.json';
/** Weight files of an open_clip hub repository, in order of preference (safetensors needs no pickle). */
export const WEIGHT_FILES = ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin'] as const;

async function sniffFormat(file: string): Promise<CheckpointFormat> {
  const fh = await fs.promises.open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new CheckpointError(e.code === 'ENOENT' ? 'file not found' : e.message, file);
  });
  try {
    const head = Buffer.alloc(16);
    const { bytesRead } = await fh.read(head, 0, 16, 0);
    if (looksLikeZip(head.subarray(0, bytesRead))) return 'torch-zip';
    // safetensors: u64 header length, then a JSON object.
    if (bytesRead >= 9 && head[8] === 0x7b) return 'safetensors';
    if (bytesRead >= 2 && head[0] === 0x80) {
      throw new CheckpointError(
        'this is a legacy (torch < 1.6, non-zip) torch.save file; re-save it with a current torch or convert it to safetensors',
        file,
      );
    }
    throw new CheckpointError(
      'unrecognised checkpoint format (expected safetensors or a torch.save zip archive)',
      file,
    );
  } finally {
    await fh.close();
  }
}

/** Reads any supported checkpoint file into open_clip's state_dict naming, fp32. */
export async function readCheckpointFile(
  file: string,
  onProgress?: ReadProgress,
): Promise<{ stateDict: StateDict; format: CheckpointFormat }> {
  const format = await sniffFormat(file);
  if (format === 'safetensors')
    return { stateDict: normalizeStateDict(await readSafetensors(file, onProgress)), format };
  const archive = await openTorchArchive(file);
  try {
    const refs = findStateDictObject(archive.root, (v): v is TorchTensorRef => v instanceof TorchTensorRef, file);
    return { stateDict: normalizeStateDict(await materialize(archive, refs, file, onProgress)), format };
  } finally {
    await archive.close();
  }
}

export interface OpenClipSource {
  weightsFile: string;
  configFile: string;
  format: CheckpointFormat;
  /** State-dict keys that the CLIP model does not use. */
  unusedKeys: string[];
}

export interface ReadOpenClipOptions {
  /** open_clip_config.json to use instead of the one beside the weights. */
  config?: string;
  onProgress?: ReadProgress;
}

export function readConfigFile(file: string): OpenClipConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CheckpointError(
      err.code === 'ENOENT' ? 'config file not found' : `cannot read config: ${err.message}`,
      file,
    );
  }
  try {
    return resolveConfig(raw);
  } catch (e) {
    throw new CheckpointError((e as Error).message, file);
  }
}

/** Finds the weights file of an open_clip model directory. */
export function findWeightsFile(dir: string): string {
  for (const name of WEIGHT_FILES) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  const epochs = fs.readdirSync(dir).filter((f) => /^epoch_\d+\.pt$|^epoch_latest\.pt$/.test(f));
  const hint = epochs.length
    ? ` It has trainer checkpoints (${epochs.join(', ')}): pass one of them as the path, with --config.`
    : '';
  throw new CheckpointError(`no weights found: expected ${WEIGHT_FILES.join(' or ')}.${hint}`, dir);
}

/**
 * Loads an open_clip model from a directory (open_clip_config.json + open_clip_model.safetensors
 * or open_clip_pytorch_model.bin), or from a checkpoint file (e.g. a trainer's epoch_N.pt) whose
 * config is given by `opts.config` or sits beside it as open_clip_config.json.
 */
export async function readOpenClipDir(
  dirOrFile: string,
  opts: ReadOpenClipOptions = {},
): Promise<{ config: OpenClipConfig; stateDict: StateDict; source: OpenClipSource }> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dirOrFile);
  } catch {
    throw new CheckpointError('no such file or directory', dirOrFile);
  }
  const dir = stat.isDirectory() ? dirOrFile : path.dirname(dirOrFile);
  const weightsFile = stat.isDirectory() ? findWeightsFile(dirOrFile) : dirOrFile;
  const configFile = opts.config ?? path.join(dir, CONFIG_FILE);
  if (!opts.config && !fs.existsSync(configFile)) {
    throw new CheckpointError(`no ${CONFIG_FILE} beside the weights: pass the model config explicitly (--config)`, dir);
  }
  const config = readConfigFile(configFile);
  const { stateDict, format } = await readCheckpointFile(weightsFile, opts.onProgress);
  const unusedKeys = checkStateDictMatchesConfig(config, stateDict, weightsFile);
  return { config, stateDict, source: { weightsFile, configFile, format, unusedKeys } };
}
