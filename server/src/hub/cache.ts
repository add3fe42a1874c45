/**
 * Where pulled models live: `<root>/hub` holds downloads in the hub's own cache layout and
 * `<root>/bundles` the converted bundles. The root is --cache-dir, else $HF_HOME, else
 * ~/.cache/clipserve.
 */
import * as os from 'node:os';
import * as path from 'node:path';

export function defaultCacheRoot(): string {
  return process.env.HF_HOME || path.join(os.homedir(), '.cache', 'clipserve');
}

export function hubCacheDir(root: string): string {
  return path.join(root, 'hub');
}

export function bundleCacheDir(root: string, repo: string, commit: string, precision: string): string {
  return path.join(root, 'bundles', repo.replace(/\//g, '--'), precision === 'fp32' ? commit : `${commit}-${precision}`);
}
