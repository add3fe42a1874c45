/**
 * Downloads single files from a Hugging Face hub model repo into a local cache laid out like the
 * hub's own (`models--org--repo/{blobs,snapshots/<commit>,refs}`):
 *
 *  - metadata first: HEAD `{endpoint}/{repo}/resolve/{revision}/{file}` without following
 *    redirects, reading X-Repo-Commit (the commit the revision points at), ETag / X-Linked-Etag
 *    (for LFS files the latter is the sha256 of the content), X-Linked-Size and Location
 *    (CDN URL for LFS files; relative redirects, e.g. of a renamed repo, are followed);
 *  - `Authorization: Bearer $HF_TOKEN` goes to the hub's origin only, never to a CDN;
 *  - data goes to `blobs/<etag>.incomplete`; an interrupted download resumes from its size with
 *    an HTTP Range request, and a finished one is checked (size, sha256 where the hub gives it)
 *    before it is renamed to `blobs/<etag>` and linked from `snapshots/<commit>/<file>`.
 *
 * A file already in the snapshot for the resolved commit is not fetched again, and when the hub
 * cannot be reached (or HF_HUB_OFFLINE=1) a revision cached earlier is served from disk.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { echo } from '../util/echo';
import { HubError } from './errors';
import { acquireLock } from './lock';
import { repoFolderName } from './ref';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
const MAX_RELATIVE_REDIRECTS = 5;

/*
 * What the hub sends becomes part of paths in the cache (blobs/<etag>, snapshots/<commit>, and
 * pull's bundle folder, which it clears before converting): each such value must be exactly the
 * shape the hub uses, or a hostile hub could write, or delete, anywhere the user may.
 */
/** A git commit id: 40 lowercase hex digits. */
export const COMMIT_ID = /^[0-9a-f]{40}$/;
/** A hub ETag: the git blob sha1 (40 hex) or, for LFS files, the content's sha256 (64 hex). */
export const HUB_ETAG = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export interface DownloadProgress {
  file: string;
  /** Bytes on disk so far, including bytes from an earlier, interrupted attempt. */
  done: number;
  total?: number;
  resumedFrom: number;
}

export interface HubClientOptions {
  /** Hub cache root (the folder holding models--org--repo). */
  cacheDir: string;
  /** Defaults to $HF_ENDPOINT, then https://huggingface.co. */
  endpoint?: string;
  /** Defaults to $HF_TOKEN. */
  token?: string;
  /** Defaults to $HF_HUB_OFFLINE === '1'. */
  offline?: boolean;
  onProgress?: (p: DownloadProgress) => void;
}

export interface FileMetadata {
  commit?: string;
  etag: string;
  size?: number;
  /** sha256 of the content, for LFS files. */
  sha256?: string;
  /** Where to GET the bytes (after the hub's redirect). */
  location: string;
}

export interface DownloadedFile {
  path: string;
  commit: string;
  sha256?: string;
  fromCache: boolean;
}

export function hubEndpoint(opts: Pick<HubClientOptions, 'endpoint'> = {}): string {
  return (opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

function hubToken(opts: Pick<HubClientOptions, 'token'>): string | undefined {
  const t = opts.token ?? process.env.HF_TOKEN;
  return t ? t : undefined;
}

function isOffline(opts: Pick<HubClientOptions, 'offline'>): boolean {
  return opts.offline ?? ['1', 'true', 'yes'].includes((process.env.HF_HUB_OFFLINE ?? '').toLowerCase());
}

export function resolveUrl(endpoint: string, repo: string, revision: string, file: string): string {
  const encFile = file.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${encFile}`;
}

/** Strips the weak-validator prefix and quotes from an ETag. */
function cleanEtag(raw: string | null): string | undefined {
  if (!raw) return undefined;
  return raw.replace(/^W\//, '').replace(/^"|"$/g, '');
}

function headersFor(
  url: string,
  endpoint: string,
  token: string | undefined,
  extra: Record<string, string> = {},
): Record<string, string> {
  const h: Record<string, string> = { 'user-agent': 'clipserve', ...extra };
  // The token is for the hub only: a CDN on another origin must never see it.
  if (token && new URL(url).origin === new URL(endpoint).origin) h.authorization = `Bearer ${token}`;
  return h;
}

function describeFailure(status: number, what: string, res: Response): HubError {
  const code = res.headers.get('x-error-code');
  const msg = res.headers.get('x-error-message');
  if (status === 401 || status === 403) {
    return new HubError(
      `${what}: access denied (HTTP ${status}${msg ? `: ${msg}` : ''}); for a gated or private repo set HF_TOKEN to a token with read access`,
      status,
    );
  }
  if (status === 404) {
    const reason =
      code === 'RepoNotFound'
        ? 'repository not found'
        : code === 'RevisionNotFound'
          ? 'revision not found'
          : 'not found';
    return new HubError(`${what}: ${reason} (HTTP 404)`, status);
  }
  return new HubError(`${what}: HTTP ${status}${msg ? ` (${msg})` : ''}`, status);
}

export async function getFileMetadata(
  repo: string,
  revision: string,
  file: string,
  opts: Omit<HubClientOptions, 'cacheDir'> = {},
): Promise<FileMetadata> {
  const endpoint = hubEndpoint(opts);
  const token = hubToken(opts);
  const what = `${repo}@${revision}/${file}`;
  let url = resolveUrl(endpoint, repo, revision, file);
  for (let hop = 0; ; hop++) {
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'HEAD',
        redirect: 'manual',
        headers: headersFor(url, endpoint, token, { 'accept-encoding': 'identity' }),
      });
    } catch (e) {
      throw new HubError(
        `${what}: cannot reach ${endpoint} (${(e as Error).message}${(e as { cause?: Error }).cause ? `: ${(e as { cause: Error }).cause.message}` : ''})`,
      );
    }
    const commit = res.headers.get('x-repo-commit') ?? undefined;
    const linkedEtag = cleanEtag(res.headers.get('x-linked-etag'));
    const etag = linkedEtag ?? cleanEtag(res.headers.get('etag'));
    if (commit !== undefined && !COMMIT_ID.test(commit))
      throw new HubError(
        `${what}: the hub sent X-Repo-Commit ${JSON.stringify(echo(commit, 80))}, not a 40-hex commit id; refusing to use it as a cache path`,
      );
    if (etag !== undefined && !HUB_ETAG.test(etag))
      throw new HubError(
        `${what}: the hub sent ETag ${JSON.stringify(echo(etag, 80))}, not a git sha1 or sha256; refusing to use it as a cache path`,
      );
    const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    if (res.status >= 300 && res.status < 400) {
      const location = res.headers.get('location');
      if (!location) throw new HubError(`${what}: redirect without a Location header`, res.status);
      const absolute = /^[a-z][a-z0-9+.-]*:/i.test(location);
      // A relative redirect stays on the hub (renamed repo): ask again there. An absolute one is
      // the CDN: the hub's own headers above describe the file.
      if (!absolute && hop < MAX_RELATIVE_REDIRECTS) {
        url = new URL(location, url).toString();
        continue;
      }
      if (!etag) throw new HubError(`${what}: the hub sent no ETag, so the file cannot be cached safely`);
      return {
        commit,
        etag,
        size: sizeHeader ? Number(sizeHeader) : undefined,
        sha256: linkedEtag && /^[0-9a-f]{64}$/.test(linkedEtag) ? linkedEtag : undefined,
        location: new URL(location, url).toString(),
      };
    }
    if (!res.ok) throw describeFailure(res.status, what, res);
    if (!etag) throw new HubError(`${what}: the hub sent no ETag, so the file cannot be cached safely`);
    return {
      commit,
      etag,
      size: sizeHeader ? Number(sizeHeader) : undefined,
      sha256: linkedEtag && /^[0-9a-f]{64}$/.test(linkedEtag) ? linkedEtag : undefined,
      location: url,
    };
  }
}

interface RepoCache {
  root: string;
  blob(etag: string): string;
  snapshot(commit: string, file: string): string;
  ref(revision: string): string;
}

function repoCache(cacheDir: string, repo: string): RepoCache {
  const root = path.join(cacheDir, repoFolderName(repo));
  return {
    root,
    blob: (etag) => path.join(root, 'blobs', etag),
    snapshot: (commit, file) => path.join(root, 'snapshots', commit, ...file.split('/')),
    ref: (revision) => path.join(root, 'refs', ...revision.split('/')),
  };
}

/** The commit a revision resolved to last time, from refs/<revision> (or the revision itself if it is a commit). */
export function cachedCommit(cacheDir: string, repo: string, revision: string): string | undefined {
  if (COMMIT_ID.test(revision)) return revision;
  try {
    const commit = fs.readFileSync(repoCache(cacheDir, repo).ref(revision), 'utf8').trim();
    return COMMIT_ID.test(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

async function sha256OfFile(file: string): Promise<ReturnType<typeof createHash>> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h;
}

/** Points snapshots/<commit>/<file> at the blob. Built under a temporary name and renamed over
 *  the final one, so concurrent pulls never see (or clobber) a half-made link. */
function linkSnapshot(blob: string, snapshot: string): void {
  fs.mkdirSync(path.dirname(snapshot), { recursive: true });
  const tmp = `${snapshot}.${process.pid}.${Date.now()}.tmp`;
  try {
    fs.symlinkSync(path.relative(path.dirname(snapshot), blob), tmp);
  } catch {
    fs.copyFileSync(blob, tmp); // filesystems without symlinks
  }
  fs.renameSync(tmp, snapshot);
}

function writeRef(cache: RepoCache, revision: string, commit: string): void {
  if (revision === commit) return;
  const ref = cache.ref(revision);
  fs.mkdirSync(path.dirname(ref), { recursive: true });
  fs.writeFileSync(ref, commit);
}

/** Fetches `meta.location` into `incomplete`, resuming from its current size. */
async function fetchInto(meta: FileMetadata, incomplete: string, file: string, opts: HubClientOptions): Promise<void> {
  const endpoint = hubEndpoint(opts);
  const token = hubToken(opts);
  for (let attempt = 0; attempt < 2; attempt++) {
    const start = fs.existsSync(incomplete) ? fs.statSync(incomplete).size : 0;
    const extra: Record<string, string> = { 'accept-encoding': 'identity' };
    if (start > 0) extra.range = `bytes=${start}-`;
    let res: Response;
    try {
      res = await fetch(meta.location, {
        redirect: 'follow',
        headers: headersFor(meta.location, endpoint, token, extra),
      });
    } catch (e) {
      throw new HubError(`${file}: download failed (${(e as Error).message}); run the command again to resume`);
    }
    if (res.status === 416 && start > 0) {
      // Nothing left to send: either we already have it all, or the partial file is stale.
      await res.body?.cancel();
      if (meta.size !== undefined && start === meta.size) return;
      fs.rmSync(incomplete, { force: true });
      continue;
    }
    if (!res.ok || !res.body) throw describeFailure(res.status, `download of ${file}`, res);
    let offset = 0;
    if (res.status === 206) {
      const m = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
      offset = m ? Number(m[1]) : -1;
      if (offset !== start) throw new HubError(`${file}: server resumed at byte ${offset}, expected ${start}`);
    }
    const total = meta.size;
    let done = offset;
    opts.onProgress?.({ file, done, total, resumedFrom: offset });
    // Each chunk is written before the next is read, so whatever arrived before a failure is on
    // disk and the next attempt resumes exactly there.
    const out = await fsp.open(incomplete, offset > 0 ? 'a' : 'w');
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        await out.write(chunk);
        done += chunk.length;
        opts.onProgress?.({ file, done, total, resumedFrom: offset });
      }
    } catch (e) {
      throw new HubError(
        `${file}: download interrupted after ${done} bytes (${(e as Error).message}); run the command again to resume`,
      );
    } finally {
      await out.close();
    }
    return;
  }
  throw new HubError(`${file}: could not resume the partial download`);
}

/** Downloads (or resumes) one blob, verifies it and moves it into place. */
async function fetchBlob(meta: FileMetadata, blob: string, file: string, opts: HubClientOptions): Promise<void> {
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  const incomplete = `${blob}.incomplete`;
  await fetchInto(meta, incomplete, file, opts);
  const size = fs.statSync(incomplete).size;
  if (meta.size !== undefined && size !== meta.size) {
    throw new HubError(
      `${file}: downloaded ${size} bytes, the hub announced ${meta.size}; run the command again to resume`,
    );
  }
  if (meta.sha256) {
    const got = (await sha256OfFile(incomplete)).digest('hex');
    if (got !== meta.sha256) {
      fs.rmSync(incomplete, { force: true });
      throw new HubError(
        `${file}: sha256 ${got} does not match the hub's ${meta.sha256}; the partial file was removed`,
      );
    }
  }
  fs.renameSync(incomplete, blob);
}

/**
 * Makes `file` of `repo@revision` available in the cache and returns its snapshot path.
 * Throws HubError with `status` 404 when the repo has no such file.
 */
export async function hubDownload(
  repo: string,
  revision: string,
  file: string,
  opts: HubClientOptions,
): Promise<DownloadedFile> {
  const cache = repoCache(opts.cacheDir, repo);
  const fromCache = (): DownloadedFile | undefined => {
    const commit = cachedCommit(opts.cacheDir, repo, revision);
    if (!commit) return undefined;
    const p = cache.snapshot(commit, file);
    return fs.existsSync(p) ? { path: p, commit, fromCache: true } : undefined;
  };
  if (isOffline(opts)) {
    const hit = fromCache();
    if (hit) return hit;
    throw new HubError(`${repo}@${revision}/${file} is not in the cache at ${opts.cacheDir} and HF_HUB_OFFLINE is set`);
  }
  let meta: FileMetadata;
  try {
    meta = await getFileMetadata(repo, revision, file, opts);
  } catch (e) {
    // Unreachable hub: serve what an earlier pull cached. An answer from the hub (404, 401) is final.
    const hit = e instanceof HubError && e.status === undefined ? fromCache() : undefined;
    if (hit) return hit;
    throw e;
  }
  const commit = meta.commit ?? revision;
  if (!COMMIT_ID.test(commit))
    throw new HubError(
      `${repo}@${revision}/${file}: the hub sent no X-Repo-Commit, so the revision cannot be pinned to a commit`,
    );
  const snapshot = cache.snapshot(commit, file);
  if (fs.existsSync(snapshot)) {
    writeRef(cache, revision, commit);
    return { path: snapshot, commit, sha256: meta.sha256, fromCache: true };
  }
  const blob = cache.blob(meta.etag);
  if (!fs.existsSync(blob)) {
    // Another process may be fetching the same blob into the same .incomplete file: take turns.
    const lock = await acquireLock(`${blob}.lock`);
    try {
      if (!fs.existsSync(blob))
        await fetchBlob(meta, blob, file, { ...opts, onProgress: (p) => (lock.touch(), opts.onProgress?.(p)) });
    } finally {
      lock.release();
    }
  }
  linkSnapshot(blob, snapshot);
  writeRef(cache, revision, commit);
  return { path: snapshot, commit, sha256: meta.sha256, fromCache: false };
}
