/**
 * `clipserve pull` against a local server that answers like the Hugging Face hub: resolve URLs
 * that redirect LFS files to a CDN on another origin (with X-Repo-Commit / X-Linked-Etag /
 * X-Linked-Size), Range requests, 404s with X-Error-Code, and a token-protected repo.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { HubError, hubDownload, parseHubRef, pullModel, resolveModelRef } from '../../../server/src/hub';
import { acquireLock } from '../../../server/src/hub/lock';
import { loadBundle } from '../../../server/src/model/bundle';
import { resolveServeConfig } from '../../../server/src/serve/config';
import { ClipTokenizer } from '../../../server/src/tokenizer';
import { writeHuggingFaceVocab } from '../../helpers/hf-vocab';
import { describeGolden, goldenPath } from '../../helpers/shared';

interface FakeFile {
  data: Buffer;
  lfs: boolean;
}
interface FakeRepo {
  commit: string;
  files: Map<string, FakeFile>;
  token?: string;
}
interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** A hub on one origin and its CDN on another, so token leaks to the CDN are observable. */
class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  /** Old repo id → new one, answered with a relative redirect like a renamed hub repo. */
  readonly renamed = new Map<string, string>();
  readonly seen: Seen[] = [];
  /** sha256 of blobs whose next CDN download is cut off half way. */
  readonly interrupt = new Set<string>();
  /** sha256 → bytes served instead of the real ones (corruption). */
  readonly corrupt = new Map<string, Buffer>();
  private hub = http.createServer((q, r) => this.onHub(q, r));
  private cdn = http.createServer((q, r) => this.onCdn(q, r));
  hubUrl = '';
  cdnUrl = '';

  async start(): Promise<void> {
    for (const s of [this.hub, this.cdn]) await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
    this.hubUrl = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections();
      await new Promise((ok) => s.close(ok));
    }
  }

  private blobs(): Map<string, Buffer> {
    const m = new Map<string, Buffer>();
    for (const r of this.repos.values()) for (const f of r.files.values()) if (f.lfs) m.set(sha256(f.data), f.data);
    return m;
  }

  private onHub(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ method: req.method!, url: `hub${req.url}`, headers: req.headers });
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(req.url ?? '');
    if (!m) return void res.writeHead(400).end();
    const [, repoId, rev, file] = m.map(decodeURIComponent);
    const moved = this.renamed.get(repoId);
    if (moved) return void res.writeHead(307, { location: `/${moved}/resolve/${rev}/${m[3]}` }).end();
    const repo = this.repos.get(repoId);
    const fail = (status: number, code: string): void =>
      void res.writeHead(status, { 'x-error-code': code, 'x-error-message': code }).end();
    if (!repo) return fail(404, 'RepoNotFound'); // the hub answers 401 for unknown repos without auth; 404 is enough here
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) return fail(401, 'GatedRepo');
    if (rev !== 'main' && rev !== repo.commit) return fail(404, 'RevisionNotFound');
    const f = repo.files.get(file);
    if (!f) return fail(404, 'EntryNotFound');
    if (f.lfs) {
      const sha = sha256(f.data);
      return void res
        .writeHead(302, {
          location: `${this.cdnUrl}/blobs/${sha}?signature=abc`,
          'x-repo-commit': repo.commit,
          'x-linked-etag': `"${sha}"`,
          'x-linked-size': String(f.data.length),
          etag: `"${sha}"`,
        })
        .end();
    }
    res.writeHead(200, {
      'x-repo-commit': repo.commit,
      etag: `"${gitSha1(f.data)}"`,
      'content-length': String(f.data.length),
    });
    res.end(req.method === 'HEAD' ? undefined : f.data);
  }

  private onCdn(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.seen.push({ method: req.method!, url: `cdn${req.url}`, headers: req.headers });
    const sha = /^\/blobs\/([0-9a-f]{64})/.exec(req.url ?? '')?.[1] ?? '';
    const real = this.blobs().get(sha);
    if (!real) return void res.writeHead(404).end();
    const data = this.corrupt.get(sha) ?? real;
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= data.length) return void res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      res.writeHead(206, {
        'content-range': `bytes ${start}-${data.length - 1}/${data.length}`,
        'content-length': String(data.length - start),
      });
    } else {
      res.writeHead(200, { 'content-length': String(data.length) });
    }
    if (this.interrupt.delete(sha)) {
      // Send part of the body, then drop the connection.
      const cut = start + Math.floor((data.length - start) / 2);
      res.write(data.subarray(start, cut), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(data.subarray(start));
  }
}

const CLI = path.join(__dirname, '..', '..', '..', 'dist', 'cli', 'main.js');
const COMMIT = 'a'.repeat(40);
const VOCAB_COMMIT = 'b'.repeat(40);

let tmp: string;
let hub: FakeHub;
let weights: Buffer;
const savedEnv = { ...process.env };

function cdnGets(): Seen[] {
  return hub.seen.filter((s) => s.url.startsWith('cdn'));
}

describeGolden('pull from a hub-like server', () => {
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-hub-'));
    hub = new FakeHub();
    await hub.start();
    const model = goldenPath('model', 'tiny-gelu');
    weights = fs.readFileSync(path.join(model, 'open_clip_model.safetensors'));
    const config = fs.readFileSync(path.join(model, 'open_clip_config.json'));
    hub.repos.set('acme/tiny-clip', {
      commit: COMMIT,
      files: new Map([
        ['open_clip_config.json', { data: config, lfs: false }],
        ['open_clip_model.safetensors', { data: weights, lfs: true }],
      ]),
    });
    hub.repos.set('acme/private-clip', {
      commit: 'c'.repeat(40),
      token: 'hf_secret',
      files: new Map([
        ['open_clip_config.json', { data: config, lfs: false }],
        // Only the torch .bin: pull must fall back to it.
        [
          'open_clip_pytorch_model.bin',
          { data: fs.readFileSync(path.join(model, 'open_clip_pytorch_model.bin')), lfs: true },
        ],
      ]),
    });
    hub.renamed.set('old-acme/tiny-clip', 'acme/tiny-clip');
    const vocabDir = path.join(tmp, 'vocab-src');
    fs.mkdirSync(vocabDir);
    const { vocabJson, mergesTxt } = writeHuggingFaceVocab(
      ClipTokenizer.fromMergesFile(goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz')),
      vocabDir,
    );
    hub.repos.set('openai/clip-vit-large-patch14', {
      commit: VOCAB_COMMIT,
      files: new Map([
        ['vocab.json', { data: fs.readFileSync(vocabJson), lfs: false }],
        ['merges.txt', { data: fs.readFileSync(mergesTxt), lfs: false }],
      ]),
    });
    process.env.HF_ENDPOINT = hub.hubUrl;
    delete process.env.HF_TOKEN;
    delete process.env.HF_HUB_OFFLINE;
  });

  afterAll(async () => {
    process.env = savedEnv;
    await hub?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('pull downloads via HF_ENDPOINT, converts once, then serves the cached bundle', async () => {
    const cacheDir = path.join(tmp, 'cache1');
    const progress: number[] = [];
    const r = await pullModel('hf-hub:acme/tiny-clip', {
      cacheDir,
      onDownload: (p) => p.file.endsWith('.safetensors') && progress.push(p.done),
    });
    expect(r).toMatchObject({ repo: 'acme/tiny-clip', revision: 'main', commit: COMMIT, cached: false });
    expect(r.bundleDir).toBe(path.join(cacheDir, 'bundles', 'acme--tiny-clip', COMMIT));
    const manifest = (await loadBundle(r.bundleDir)).manifest;
    expect(manifest.name).toBe('tiny-clip');
    expect(manifest.source).toMatchObject({ hub_repo: 'acme/tiny-clip', hub_commit: COMMIT, format: 'safetensors' });
    expect(progress[progress.length - 1]).toBe(weights.length);
    // Hub cache layout: blob by etag, snapshot by commit, ref for the branch.
    const repoDir = path.join(cacheDir, 'hub', 'models--acme--tiny-clip');
    expect(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    expect(sha256(fs.readFileSync(path.join(repoDir, 'snapshots', COMMIT, 'open_clip_model.safetensors')))).toBe(
      sha256(weights),
    );
    expect(fs.existsSync(path.join(repoDir, 'blobs', sha256(weights)))).toBe(true);

    const before = cdnGets().length;
    const again = await pullModel('hf-hub:acme/tiny-clip@main', { cacheDir });
    expect(again).toMatchObject({ bundleDir: r.bundleDir, cached: true });
    expect(cdnGets().length).toBe(before);
    // resolveModelRef: hub refs map to the cached bundle, directories pass through.
    expect(await resolveModelRef(`hf-hub:acme/tiny-clip@${COMMIT}`, { cacheDir })).toBe(r.bundleDir);
    expect(await resolveModelRef(r.bundleDir)).toBe(r.bundleDir);
    await expect(resolveModelRef(path.join(tmp, 'nope'))).rejects.toThrow(/bundle directory does not exist.*hf-hub:/);
    await expect(resolveModelRef(goldenPath('model', 'tiny-gelu'))).rejects.toThrow(
      /open_clip checkpoint directory, not a bundle: convert it first/,
    );
    // Offline: the cached revision is used without asking the hub.
    const hubRequests = hub.seen.length;
    expect((await pullModel('hf-hub:acme/tiny-clip', { cacheDir, offline: true })).bundleDir).toBe(r.bundleDir);
    expect(hub.seen.length).toBe(hubRequests);
    await expect(pullModel('hf-hub:acme/other', { cacheDir, offline: true })).rejects.toThrow(
      /not in the cache.*HF_HUB_OFFLINE/,
    );
  });

  test('an interrupted download resumes with a Range request', async () => {
    const cacheDir = path.join(tmp, 'cache2');
    const sha = sha256(weights);
    hub.interrupt.add(sha);
    const err = await pullModel('hf-hub:acme/tiny-clip', { cacheDir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toMatch(/interrupted.*run the command again to resume/);
    const partial = path.join(cacheDir, 'hub', 'models--acme--tiny-clip', 'blobs', `${sha}.incomplete`);
    const have = fs.statSync(partial).size;
    expect(have).toBeGreaterThan(0);
    expect(have).toBeLessThan(weights.length);

    const resumedFrom: number[] = [];
    const r = await pullModel('hf-hub:acme/tiny-clip', {
      cacheDir,
      onDownload: (p) => p.file.endsWith('.safetensors') && resumedFrom.push(p.resumedFrom),
    });
    expect(resumedFrom[0]).toBe(have);
    const last = cdnGets()
      .filter((s) => s.url.includes(sha))
      .pop()!;
    expect(last.headers.range).toBe(`bytes=${have}-`);
    expect(fs.existsSync(partial)).toBe(false);
    expect(sha256(fs.readFileSync(path.join(cacheDir, 'hub', 'models--acme--tiny-clip', 'blobs', sha)))).toBe(sha);
    expect(fs.existsSync(path.join(r.bundleDir, 'clipserve.json'))).toBe(true);
  });

  test('HF_TOKEN is sent to the hub, never to the CDN; without it a private repo is refused', async () => {
    const cacheDir = path.join(tmp, 'cache3');
    const denied = await pullModel('hf-hub:acme/private-clip', { cacheDir }).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(HubError);
    expect((denied as HubError).status).toBe(401);
    expect((denied as Error).message).toMatch(/HF_TOKEN/);

    process.env.HF_TOKEN = 'hf_secret';
    try {
      const seenFrom = hub.seen.length;
      const r = await pullModel('hf-hub:acme/private-clip', { cacheDir });
      const requests = hub.seen.slice(seenFrom);
      const hubCalls = requests.filter((s) => s.url.startsWith('hub/acme/private-clip'));
      expect(hubCalls.length).toBeGreaterThan(0);
      for (const s of hubCalls) expect(s.headers.authorization).toBe('Bearer hf_secret');
      const cdn = requests.filter((s) => s.url.startsWith('cdn'));
      expect(cdn.length).toBe(1);
      expect(cdn[0].headers.authorization).toBeUndefined();
      // No safetensors in this repo: the .bin was fetched and converted.
      expect(requests.some((s) => s.url.endsWith('/open_clip_model.safetensors'))).toBe(true);
      expect((await loadBundle(r.bundleDir)).manifest.source).toMatchObject({ format: 'torch-zip' });
    } finally {
      delete process.env.HF_TOKEN;
    }
  });

  test('404s, renamed repos, corrupted blobs and bad references', async () => {
    const cacheDir = path.join(tmp, 'cache4');
    await expect(pullModel('hf-hub:acme/missing', { cacheDir })).rejects.toThrow(/repository not found/);
    await expect(pullModel('hf-hub:acme/tiny-clip@v9', { cacheDir })).rejects.toThrow(/revision not found/);
    const opts = { cacheDir: path.join(cacheDir, 'hub') };
    await expect(hubDownload('acme/tiny-clip', 'main', 'nope.txt', opts)).rejects.toMatchObject({ status: 404 });
    // A renamed repo answers with a relative redirect to the new name.
    const moved = await hubDownload('old-acme/tiny-clip', 'main', 'open_clip_config.json', opts);
    expect(moved.commit).toBe(COMMIT);

    const sha = sha256(weights);
    const bad = Buffer.from(weights);
    bad[bad.length - 1] ^= 0xff;
    hub.corrupt.set(sha, bad);
    try {
      await expect(hubDownload('acme/tiny-clip', 'main', 'open_clip_model.safetensors', opts)).rejects.toThrow(
        /sha256 .* does not match/,
      );
      expect(fs.existsSync(path.join(opts.cacheDir, 'models--acme--tiny-clip', 'blobs', `${sha}.incomplete`))).toBe(
        false,
      );
    } finally {
      hub.corrupt.delete(sha);
    }

    expect(parseHubRef('hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K@v1.0')).toEqual({
      repo: 'laion/CLIP-ViT-L-14-laion2B-s32B-b82K',
      revision: 'v1.0',
    });
    expect(() => parseHubRef('hf-hub:just-a-name')).toThrow(/invalid hub repo id/);
    expect(() => parseHubRef('hf-hub:a/../b')).toThrow(HubError);
    expect(() => parseHubRef('laion/x')).toThrow(/not a hub reference/);
  });

  test('concurrent pulls of one model download and convert it once', async () => {
    const cacheDir = path.join(tmp, 'cache6');
    const cdnBefore = cdnGets().length;
    const results = await Promise.all([1, 2, 3].map(() => pullModel('hf-hub:acme/tiny-clip', { cacheDir })));
    expect(new Set(results.map((r) => r.bundleDir)).size).toBe(1);
    expect(results.filter((r) => !r.cached).length).toBe(1);
    expect(cdnGets().length - cdnBefore).toBe(1);
    const leftovers = fs
      .readdirSync(path.join(cacheDir, 'bundles', 'acme--tiny-clip'))
      .concat(fs.readdirSync(path.join(cacheDir, 'hub', 'models--acme--tiny-clip', 'blobs')));
    expect(leftovers.filter((f) => /\.(lock|incomplete)$|\.tmp/.test(f))).toEqual([]);
  });

  test('a stale lock left by a dead process is taken over', async () => {
    const lockFile = path.join(tmp, 'locks', 'x.lock');
    fs.mkdirSync(path.dirname(lockFile), { recursive: true });
    fs.writeFileSync(lockFile, 'otherhost pid 1\n');
    const old = new Date(Date.now() - 10_000);
    fs.utimesSync(lockFile, old, old);
    const waited: string[] = [];
    const held = await acquireLock(lockFile, { staleMs: 5_000, pollMs: 10, onWait: (h) => waited.push(h) });
    expect(fs.readFileSync(lockFile, 'utf8')).toContain(`pid ${process.pid}`);
    // A live lock makes the next caller wait until it is released.
    const second = acquireLock(lockFile, { staleMs: 5_000, pollMs: 10, onWait: (h) => waited.push(h) });
    await new Promise((r) => setTimeout(r, 50));
    held.release();
    (await second).release();
    expect(waited).toEqual([`${os.hostname()} pid ${process.pid}`]);
    expect(fs.existsSync(lockFile)).toBe(false);
  });

  test('CLI: clipserve pull prints the bundle path into the cache serve reads by default', async () => {
    const xdg = path.join(tmp, 'xdg-cache');
    const home = path.join(xdg, 'clipserve');
    const env = { ...process.env, HF_ENDPOINT: hub.hubUrl, XDG_CACHE_HOME: xdg, CLIPSERVE_CACHE_DIR: '' };
    // serve resolves its default cache the same way (same environment, this process).
    const saved = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = xdg;
    try {
      expect(resolveServeConfig({}).cacheDir).toBe(home);
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
    }
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, [CLI, 'pull', 'hf-hub:acme/tiny-clip'], { env });
    expect(stdout.trim()).toBe(path.join(home, 'bundles', 'acme--tiny-clip', COMMIT));
    const again = await run(process.execPath, [CLI, 'pull', 'hf-hub:acme/tiny-clip', '--cache-dir', home], { env });
    expect(again.stdout.trim()).toBe(stdout.trim());
    expect(again.stderr).toMatch(/already in the cache/);
    const bad = await run(process.execPath, [CLI, 'pull', 'hf-hub:acme/missing'], { env }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stderr: string }).stderr).toMatch(/acme\/missing.*repository not found/);
  });

  test('an unreachable hub falls back to the cached revision', async () => {
    const cacheDir = path.join(tmp, 'cache5');
    const first = await pullModel('hf-hub:acme/tiny-clip', { cacheDir });
    const r = await pullModel('hf-hub:acme/tiny-clip', { cacheDir, endpoint: 'http://127.0.0.1:9' });
    expect(r).toMatchObject({ bundleDir: first.bundleDir, cached: true });
  });
});
