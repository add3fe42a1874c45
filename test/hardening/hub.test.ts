/**
 * `clipserve pull` against a hostile hub on loopback (issue 13 item 6): every value the hub sends
 * that becomes part of a cache path (X-Repo-Commit → snapshots/<commit> and the bundle folder that
 * pull clears; ETag / X-Linked-Etag → blobs/<etag>) must have the hub's own shape, or the pull
 * fails without writing (or deleting) anything outside --cache-dir. Runs the real CLI from dist/.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { hubDownload } from '../../server/src/hub';
import { cliPath } from '../helpers/server-process';

jest.setTimeout(60_000);

const GOOD_COMMIT = 'c'.repeat(40);
const BODY = Buffer.from('{"model_cfg": {}}');
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');

/** A hub whose headers the test chooses per case; it answers HEAD and GET for every file the same way. */
function hostileHub(headers: () => Record<string, string>): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-length': String(BODY.length), ...headers() });
    res.end(req.method === 'HEAD' ? undefined : BODY);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () => new Promise((ok) => (server.closeAllConnections(), server.close(() => ok()))),
      }),
    ),
  );
}

/** Every file under `dir` (relative paths), recursively. */
const tree = (dir: string): string[] =>
  fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).sort() : [];

describe('a hostile hub cannot steer writes outside the cache', () => {
  let tmp: string;
  let cache: string;
  let victim: string;

  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-hostile-hub-'));
    cache = path.join(tmp, 'cache');
    victim = path.join(tmp, 'victim');
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, 'keep.txt'), 'precious');
  });

  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const cases: [string, () => Record<string, string>, RegExp][] = [
    [
      'ETag "../../x"',
      () => ({ 'x-repo-commit': GOOD_COMMIT, etag: '"../../../victim/x"' }),
      /ETag .* not a git sha1 or sha256/,
    ],
    [
      'X-Linked-Etag with a slash',
      () => ({
        'x-repo-commit': GOOD_COMMIT,
        'x-linked-etag': `"${'a'.repeat(32)}/../../victim/${'b'.repeat(20)}"`,
        etag: `"${sha1(BODY)}"`,
      }),
      /ETag .* not a git sha1 or sha256/,
    ],
    [
      'X-Repo-Commit ../../x',
      () => ({ 'x-repo-commit': '../../../../victim', etag: `"${sha1(BODY)}"` }),
      /X-Repo-Commit .* not a 40-hex commit id/,
    ],
    [
      'X-Repo-Commit absolute',
      () => ({ 'x-repo-commit': path.join(os.tmpdir(), 'owned'), etag: `"${sha1(BODY)}"` }),
      /X-Repo-Commit .* not a 40-hex commit id/,
    ],
    ['no X-Repo-Commit for a branch', () => ({ etag: `"${sha1(BODY)}"` }), /no X-Repo-Commit/],
  ];

  test.each(cases)('%s: refused, nothing written outside the cache', async (_what, headers, reason) => {
    const hub = await hostileHub(headers);
    try {
      await expect(
        hubDownload('acme/model', 'main', 'open_clip_config.json', {
          cacheDir: cache,
          endpoint: hub.url,
          offline: false,
        }),
      ).rejects.toThrow(reason);
      // The real CLI, which also clears and fills the bundle folder named after the commit.
      // Asynchronously: the hub answers from this process.
      const run = await new Promise<{ code: number | null; out: string }>((resolve) =>
        execFile(
          process.execPath,
          [cliPath(), 'pull', 'hf-hub:acme/model', '--cache-dir', cache],
          { env: { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_OFFLINE: '0' }, timeout: 30_000 },
          (err, stdout, stderr) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, out: `${stdout}${stderr}` }),
        ),
      );
      expect(run.code).not.toBe(0);
      expect(run.out).toMatch(reason);
    } finally {
      await hub.close();
    }
    expect(tree(victim)).toEqual(['keep.txt']);
    expect(fs.readFileSync(path.join(victim, 'keep.txt'), 'utf8')).toBe('precious');
    expect(fs.existsSync(path.join(os.tmpdir(), 'owned'))).toBe(false);
    expect(fs.readdirSync(tmp).sort()).toEqual(fs.existsSync(cache) ? ['cache', 'victim'] : ['victim']);
  });

  test('the same hub with well-formed headers is served (the checks do not refuse the real shapes)', async () => {
    const hub = await hostileHub(() => ({ 'x-repo-commit': GOOD_COMMIT, etag: `"${sha1(BODY)}"` }));
    try {
      const got = await hubDownload('acme/model', 'main', 'open_clip_config.json', {
        cacheDir: cache,
        endpoint: hub.url,
        offline: false,
      });
      expect(got.commit).toBe(GOOD_COMMIT);
      expect(fs.readFileSync(got.path)).toEqual(BODY);
      expect(got.path.startsWith(cache)).toBe(true);
    } finally {
      await hub.close();
    }
  });
});
