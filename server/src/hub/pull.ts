/**
 * `hf-hub:<org>/<repo>[@revision]` → a converted bundle in the local cache. Downloads the
 * open_clip files of the repo (config + safetensors, else the torch .bin), the CLIP BPE
 * vocabulary (vocab.json + merges.txt, from `openai/clip-vit-large-patch14` unless told
 * otherwise), and converts once per resolved commit; later pulls of the same commit return the
 * cached bundle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONFIG_FILE, WEIGHT_FILES } from '../checkpoint';
import { convertCheckpoint, type Precision } from '../checkpoint/convert';
import { HF_MERGES_FILE, HF_VOCAB_FILE } from '../checkpoint/vocab';
import { MANIFEST_FILE } from '../model/bundle';
import { bundleCacheDir, defaultCacheRoot, hubCacheDir } from './cache';
import { hubDownload, type DownloadProgress, type HubClientOptions } from './download';
import { acquireLock } from './lock';
import { HubError } from './errors';
import { parseHubRef } from './ref';

export const DEFAULT_VOCAB_REPO = 'openai/clip-vit-large-patch14';

export interface PullOptions {
  /** Cache root; defaults to defaultCacheRoot() ($XDG_CACHE_HOME/clipserve or ~/.cache/clipserve). */
  cacheDir?: string;
  endpoint?: string;
  token?: string;
  offline?: boolean;
  /** Hub repo (optionally @revision) with vocab.json + merges.txt; default openai/clip-vit-large-patch14,
   *  or $CLIPSERVE_VOCAB_REPO. */
  vocabRepo?: string;
  precision?: Precision;
  onDownload?: (p: DownloadProgress) => void;
  onConvert?: (phase: 'read' | 'write', done: number, total: number) => void;
  onStatus?: (message: string) => void;
}

export interface PullResult {
  bundleDir: string;
  repo: string;
  revision: string;
  commit: string;
  /** True when the bundle already existed and nothing was converted. */
  cached: boolean;
}

function parseRepoAndRevision(spec: string): { repo: string; revision: string } {
  return parseHubRef(`hf-hub:${spec}`);
}

export async function pullModel(ref: string, opts: PullOptions = {}): Promise<PullResult> {
  const { repo, revision } = parseHubRef(ref);
  const root = path.resolve(opts.cacheDir ?? defaultCacheRoot());
  const precision = opts.precision ?? 'fp32';
  const client: HubClientOptions = {
    cacheDir: hubCacheDir(root),
    endpoint: opts.endpoint,
    token: opts.token,
    offline: opts.offline,
    onProgress: opts.onDownload,
  };
  const status = opts.onStatus ?? (() => undefined);

  const config = await hubDownload(repo, revision, CONFIG_FILE, client);
  const commit = config.commit;
  const bundleDir = bundleCacheDir(root, repo, commit, precision);
  // writeBundle renames a finished bundle into place, so a manifest means a complete bundle.
  const finished = (): boolean => fs.existsSync(path.join(bundleDir, MANIFEST_FILE));
  if (finished()) return { bundleDir, repo, revision, commit, cached: true };

  // One process per bundle downloads and converts; others wait and then reuse its result.
  const lock = await acquireLock(`${bundleDir}.lock`, {
    onWait: (holder) => status(`waiting for another pull of ${repo} (${holder})`),
  });
  try {
    if (finished()) return { bundleDir, repo, revision, commit, cached: true };
    // Progress doubles as the lock's heartbeat, so a long conversion never looks abandoned.
    const beat = { ...client, onProgress: (p: DownloadProgress) => (lock.touch(), opts.onDownload?.(p)) };
    const onConvert: PullOptions['onConvert'] = (phase, done, total) => (
      lock.touch(),
      opts.onConvert?.(phase, done, total)
    );
    await downloadAndConvert(repo, revision, commit, config.path, bundleDir, precision, beat, { ...opts, onConvert });
  } finally {
    lock.release();
  }
  return { bundleDir, repo, revision, commit, cached: false };
}

async function downloadAndConvert(
  repo: string,
  revision: string,
  commit: string,
  configPath: string,
  bundleDir: string,
  precision: Precision,
  client: HubClientOptions,
  opts: PullOptions,
): Promise<void> {
  const status = opts.onStatus ?? (() => undefined);

  let weights: string | undefined;
  for (const file of WEIGHT_FILES) {
    try {
      status(`fetching ${repo}/${file}`);
      weights = (await hubDownload(repo, commit, file, client)).path;
      break;
    } catch (e) {
      if (e instanceof HubError && e.status === 404) continue; // try the next format
      throw e;
    }
  }
  if (!weights) throw new HubError(`${repo}@${revision} has neither ${WEIGHT_FILES.join(' nor ')}`, 404);

  const vocabSpec = parseRepoAndRevision(opts.vocabRepo ?? process.env.CLIPSERVE_VOCAB_REPO ?? DEFAULT_VOCAB_REPO);
  status(`fetching the BPE vocabulary from ${vocabSpec.repo}`);
  const vocabJson = await hubDownload(vocabSpec.repo, vocabSpec.revision, HF_VOCAB_FILE, client);
  await hubDownload(vocabSpec.repo, vocabJson.commit, HF_MERGES_FILE, client);

  status(`converting ${repo}@${commit.slice(0, 12)}`);
  // A folder left by an interrupted pull has no manifest: clear it for the writer.
  fs.rmSync(bundleDir, { recursive: true, force: true });
  await convertCheckpoint({
    input: weights,
    config: configPath,
    outDir: bundleDir,
    vocab: vocabJson.path,
    name: repo.split('/')[1],
    version: commit.slice(0, 12),
    precision,
    provenance: { hub_repo: repo, hub_revision: revision, hub_commit: commit },
    onProgress: opts.onConvert,
  });
}
