/**
 * Where pulled models live: `<root>/hub` holds downloads in the hub's own cache layout and
 * `<root>/bundles` the converted bundles.
 */
import * as os from 'node:os';
import * as path from 'node:path';

/**
 * The one default cache root of every command (serve's demo bundle and hf-hub models, pull):
 * $XDG_CACHE_HOME/clipserve, else ~/.cache/clipserve. One root, so `clipserve pull` followed by
 * `clipserve serve --model hf-hub:…` finds what was pulled. CLIPSERVE_CACHE_DIR / --cache-dir
 * override it.
 */
export function defaultCacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'), 'clipserve');
}

export function hubCacheDir(root: string): string {
  return path.join(root, 'hub');
}

export function bundleCacheDir(root: string, repo: string, commit: string, precision: string): string {
  return path.join(
    root,
    'bundles',
    repo.replace(/\//g, '--'),
    precision === 'fp32' ? commit : `${commit}-${precision}`,
  );
}
