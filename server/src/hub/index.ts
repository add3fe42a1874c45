/**
 * Model references for every command's --model: a bundle directory, or `hf-hub:<org>/<repo>[@rev]`,
 * which is pulled and converted once and then served from the cache.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIG_FILE } from '../checkpoint';
import { MANIFEST_FILE } from '../model/bundle';
import { HubError } from './errors';
import { pullModel, type PullOptions } from './pull';
import { isHubRef } from './ref';

export { HubError } from './errors';
export { pullModel, DEFAULT_VOCAB_REPO, type PullOptions, type PullResult } from './pull';
export { parseHubRef, isHubRef, HF_HUB_PREFIX, type HubRef } from './ref';
export {
  hubDownload,
  getFileMetadata,
  DEFAULT_ENDPOINT,
  type DownloadProgress,
  type HubClientOptions,
} from './download';
export { defaultCacheRoot } from './cache';

export async function resolveModelRef(ref: string, opts: PullOptions = {}): Promise<string> {
  if (isHubRef(ref)) return (await pullModel(ref, opts)).bundleDir;
  const dir = path.resolve(ref);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new HubError(
      `${dir}: bundle directory does not exist (a model is a bundle directory or hf-hub:<org>/<repo>[@revision])`,
    );
  }
  if (!stat.isDirectory())
    throw new HubError(
      `model "${ref}" is a file; --model takes a bundle directory (see "clipserve convert") or hf-hub:<org>/<repo>`,
    );
  if (!fs.existsSync(path.join(dir, MANIFEST_FILE)) && fs.existsSync(path.join(dir, CONFIG_FILE))) {
    throw new HubError(
      `${dir} is an open_clip checkpoint directory, not a bundle: convert it first with "clipserve convert ${ref} --out <bundle dir>"`,
    );
  }
  return dir;
}
