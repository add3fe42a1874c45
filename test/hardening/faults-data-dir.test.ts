/**
 * The data directory under attack and under pressure (`clipserve serve --data-dir` as a child
 * process, loopback only):
 *  - the disk fills up while a fine-tune job writes its artifacts (the new model bundle): the job
 *    fails with the reason, leaves no half-written bundle and registers no model version, the
 *    server keeps serving, and once space is freed the next job succeeds. The disk is a real
 *    tmpfs of a few MiB when this process may mount one (root with CAP_SYS_ADMIN); otherwise the
 *    child runs under RLIMIT_FSIZE (`ulimit -f`, SIGXFSZ ignored) so large writes fail with EFBIG —
 *    the test says which it used;
 *  - dataset paths cannot leave the data directory, whatever the spelling: zip entries with `..`
 *    or absolute names, a symlinked CSV, image paths through a symlink; and an image "path" that
 *    is a URL is never fetched (no SSRF: a listener on loopback sees no request).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import yazl from 'yazl';
import { ensureDemoBundle } from '../../server/src/model/demo';
import {
  client,
  iconDataset,
  rejection,
  unary,
  uploadPairs,
  waitForJob,
  type Any,
  type Client,
} from '../helpers/finetune-fixtures';
import { ServerProcess, startServerProcess, TEST_CACHE_DIR } from '../helpers/server-process';

jest.setTimeout(180_000);

const HP = {
  epochs: 3,
  batchSize: 16,
  learningRate: 0.01,
  warmupSteps: 1,
  validationSplit: 0.2,
  seed: 1,
  grayscaleProb: 0,
  colorJitterProb: 0,
};
const TMPFS_BYTES = 16 << 20;
/** Space left free for a job before its bundle: enough for events and checkpoints, not for the bundle. */
const HEADROOM_BYTES = 600 << 10;

function tryMountTmpfs(dir: string): boolean {
  // CLIPSERVE_TEST_NO_TMPFS=1 exercises the RLIMIT_FSIZE fallback where tmpfs would work.
  if (process.platform !== 'linux' || process.getuid?.() !== 0 || process.env.CLIPSERVE_TEST_NO_TMPFS === '1')
    return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * A zip whose entry names may be ones yazl refuses to write ("../x", "/x"): each is written under
 * a same-length stand-in name, then the stand-in's bytes are replaced in the local header and the
 * central directory (names are not checksummed).
 */
async function zipOf(entries: [string, Buffer | string][]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  const standIns = entries.map(
    ([name], i) =>
      [name, name.replace(/[./]/g, (c) => (c === '.' ? 'D' : 'S')).replace(/^./, String.fromCharCode(97 + i))] as const,
  );
  entries.forEach(([, data], i) => zip.addBuffer(Buffer.from(data), standIns[i][1]));
  zip.end();
  const bytes = await new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    zip.outputStream.on('data', (b: Buffer) => parts.push(b));
    zip.outputStream.on('end', () => resolve(Buffer.concat(parts)));
    zip.outputStream.on('error', reject);
  });
  for (const [real, standIn] of standIns) {
    if (real === standIn) continue;
    const from = Buffer.from(standIn);
    const to = Buffer.from(real);
    for (let at = bytes.indexOf(from); at >= 0; at = bytes.indexOf(from, at + 1)) to.copy(bytes, at);
  }
  return bytes;
}

function uploadChunks(c: Client, format: 'DATASET_FORMAT_ZIP' | 'DATASET_FORMAT_CSV', bytes: Buffer): Promise<Any> {
  return new Promise((resolve, reject) => {
    const call = (
      c.UploadDataset as (cb: (e: grpc.ServiceError | null, r: Any) => void) => grpc.ClientWritableStream<Any>
    )((err, res) => (err ? reject(err) : resolve(res.dataset)));
    call.write({ header: { name: 'attack', format } });
    for (let i = 0; i < bytes.length; i += 64 << 10) call.write({ chunk: bytes.subarray(i, i + (64 << 10)) });
    call.end();
  });
}

describe('the data disk fills up during a fine-tune job', () => {
  let tmp: string;
  let dataDir: string;
  let mounted = false;
  let server: ServerProcess;
  let ft: Client;
  let models: Client;
  let embed: Client;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-diskfull-'));
    dataDir = path.join(tmp, 'data');
    fs.mkdirSync(dataDir);
    mounted = tryMountTmpfs(dataDir);
    const base = path.join(tmp, 'base');
    fs.cpSync(await ensureDemoBundle(TEST_CACHE_DIR), base, { recursive: true });
    const args = ['--model', base, '--data-dir', dataDir, '--intra-op-threads', '1', '--preprocess-workers', '1'];
    // Without a mountable tmpfs: no file of the server may grow past 512 KiB (the bundle's weights
    // are larger; its database and events are not).
    server = await startServerProcess(
      args,
      mounted ? {} : { wrap: ['bash', '-c', `trap '' XFSZ; ulimit -f ${512}; exec "$0" "$@"`] },
    );
    console.log(
      `data disk: ${mounted ? `tmpfs of ${TMPFS_BYTES >> 20} MiB (ENOSPC)` : 'RLIMIT_FSIZE 512 KiB per file (EFBIG): tmpfs not mountable here'}`,
    );
    ft = client('FineTuneService', server.port);
    models = client('ModelService', server.port);
    embed = client('EmbeddingService', server.port);
  });

  afterAll(async () => {
    for (const c of [ft, models, embed]) c?.close();
    if (server) await server.stop();
    if (mounted) execFileSync('umount', [dataDir]);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('the job fails with the reason and leaves nothing half-written; the server serves on; freed space lets the next job succeed', async () => {
    const pairs = (await iconDataset()).slice(0, 120);
    const dataset = await uploadPairs(ft, 'icons', pairs);
    const filler = path.join(dataDir, 'filler.bin');
    if (mounted) fs.writeFileSync(filler, Buffer.alloc(Math.max(0, freeBytes(dataDir) - HEADROOM_BYTES)));
    const versionsBefore = (await unary(models, 'ListModels', {})).models.map((m: Any) => m.version);

    const { job } = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: dataset.id,
      method: 'adapter',
      hyperparameters: HP,
    });
    const failed = await waitForJob(
      ft,
      job.id,
      (j) => ['FINE_TUNE_JOB_STATE_FAILED', 'FINE_TUNE_JOB_STATE_SUCCEEDED'].includes(j.state),
      120_000,
    );
    expect(failed.state).toBe('FINE_TUNE_JOB_STATE_FAILED');
    expect(failed.error.message).toMatch(mounted ? /ENOSPC|no space left/i : /EFBIG|file too large/i);
    // No model version from it, and no half-written bundle left taking space.
    expect((await unary(models, 'ListModels', {})).models.map((m: Any) => m.version)).toEqual(versionsBefore);
    const leftovers = fs
      .readdirSync(path.join(dataDir, 'jobs', job.id), { recursive: true })
      .map(String)
      .filter((f) => /\.tmp-|\.onnx/.test(f));
    expect(leftovers).toEqual([]);
    // The failure and its reason are in the job's events (the database still writes).
    const { job: again } = await unary(ft, 'GetFineTuneJob', { jobId: job.id });
    expect(again.error.message).toBe(failed.error.message);
    // Serving is unaffected.
    expect((await unary(embed, 'EmbedText', { texts: ['a red star on a white background'] })).embeddings).toHaveLength(
      1,
    );
    expect(server.child.exitCode).toBeNull();

    if (!mounted) return; // a file-size limit cannot be lifted from a running process
    fs.rmSync(filler);
    const { job: retry } = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: dataset.id,
      method: 'adapter',
      hyperparameters: HP,
    });
    const done = await waitForJob(
      ft,
      retry.id,
      (j) => ['FINE_TUNE_JOB_STATE_FAILED', 'FINE_TUNE_JOB_STATE_SUCCEEDED'].includes(j.state),
      120_000,
    );
    expect([done.state, done.error?.message]).toEqual(['FINE_TUNE_JOB_STATE_SUCCEEDED', undefined]);
  });
});

describe('the data disk is full before the job records its progress', () => {
  /*
   * With only ~160 KiB left, SQLite cannot append the job's step events (SQLITE_FULL, raised inside
   * the adapter trainer's worker 'message' listener through ctx.emit): the job runner stops the job,
   * frees its artifacts and fails it with the reason; the process serves on.
   */
  // A per-file size limit cannot stand in here (the database itself must be the one refused), so
  // without a mountable tmpfs this case is skipped, loudly.
  const TMPFS_OK = (() => {
    const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-tmpfs-probe-'));
    const ok = tryMountTmpfs(probe);
    if (ok) execFileSync('umount', [probe]);
    fs.rmSync(probe, { recursive: true, force: true });
    if (!ok)
      console.warn(
        '\n!!! SKIPPING the full-database case: tmpfs cannot be mounted here (needs root with CAP_SYS_ADMIN) !!!\n',
      );
    return ok;
  })();

  (TMPFS_OK ? test : test.skip)('the job fails and the server survives', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-dbfull-'));
    const dataDir = path.join(tmp, 'data');
    fs.mkdirSync(dataDir);
    if (!tryMountTmpfs(dataDir)) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new Error('tmpfs could be mounted a moment ago but not now');
    }
    let server: ServerProcess | undefined;
    const base = path.join(tmp, 'base');
    fs.cpSync(await ensureDemoBundle(TEST_CACHE_DIR), base, { recursive: true });
    try {
      server = await startServerProcess([
        '--model',
        base,
        '--data-dir',
        dataDir,
        '--intra-op-threads',
        '1',
        '--preprocess-workers',
        '1',
      ]);
      const ft = client('FineTuneService', server.port);
      const dataset = await uploadPairs(ft, 'icons', (await iconDataset()).slice(0, 120));
      fs.writeFileSync(path.join(dataDir, 'filler.bin'), Buffer.alloc(Math.max(0, freeBytes(dataDir) - (160 << 10))));
      const { job } = await unary(ft, 'CreateFineTuneJob', {
        trainingFile: dataset.id,
        method: 'adapter',
        hyperparameters: HP,
      });
      const end = await waitForJob(
        ft,
        job.id,
        (j) => ['FINE_TUNE_JOB_STATE_FAILED', 'FINE_TUNE_JOB_STATE_SUCCEEDED'].includes(j.state),
        60_000,
      );
      ft.close();
      expect(end.state).toBe('FINE_TUNE_JOB_STATE_FAILED');
      expect(server.child.exitCode).toBeNull();
    } finally {
      await server?.stop();
      execFileSync('umount', [dataDir]);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('dataset paths stay inside the data directory; URLs are never fetched', () => {
  let tmp: string;
  let dataDir: string;
  let outside: string;
  let server: ServerProcess;
  let ft: Client;
  let listener: http.Server;
  const requests: string[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-confine-'));
    dataDir = path.join(tmp, 'data');
    outside = path.join(tmp, 'outside');
    fs.mkdirSync(dataDir);
    fs.mkdirSync(outside);
    const icon = (await iconDataset())[0].image;
    for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(outside, `secret${i}.png`), icon);
    fs.writeFileSync(
      path.join(outside, 'train.csv'),
      ['filepath\ttitle', ...Array.from({ length: 12 }, (_, i) => `secret${i}.png\ta secret`)].join('\n') + '\n',
    );
    listener = http.createServer((req, res) => (requests.push(req.url ?? ''), res.end(icon)));
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    server = await startServerProcess(['--data-dir', dataDir, '--intra-op-threads', '1', '--preprocess-workers', '1']);
    ft = client('FineTuneService', server.port);
  });

  afterAll(async () => {
    ft?.close();
    if (server) await server.stop();
    await new Promise((r) => listener.close(r));
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('zip entries with ".." or absolute names are refused and write nothing outside', async () => {
    for (const name of ['../../escaped.txt', '/tmp/escaped-abs.txt', 'ok/../../../escaped2.txt']) {
      const zip = await zipOf([
        ['train.csv', `filepath\ttitle\n${name}\tx\n`],
        [name, 'pwned'],
      ]);
      expect(zip.includes(Buffer.from(name))).toBe(true);
      const err = await rejection(uploadChunks(ft, 'DATASET_FORMAT_ZIP', zip));
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
    expect(fs.existsSync(path.join(tmp, 'escaped.txt'))).toBe(false);
    expect(fs.existsSync('/tmp/escaped-abs.txt')).toBe(false);
    expect(fs.readdirSync(tmp).sort()).toEqual(['data', 'outside']);
  });

  test('a symlink inside the data directory does not lead out of it', async () => {
    fs.symlinkSync(path.join(outside, 'train.csv'), path.join(dataDir, 'linked.csv'));
    const viaCsv = await rejection(unary(ft, 'CreateFineTuneJob', { trainingFile: 'linked.csv', method: 'adapter' }));
    expect([viaCsv.code, viaCsv.details]).toEqual([
      grpc.status.INVALID_ARGUMENT,
      expect.stringMatching(/outside the data directory/),
    ]);
    // A CSV inside whose image path runs through a symlinked directory.
    fs.symlinkSync(outside, path.join(dataDir, 'elsewhere'));
    fs.writeFileSync(
      path.join(dataDir, 'through-link.csv'),
      ['filepath\ttitle', ...Array.from({ length: 12 }, (_, i) => `elsewhere/secret${i}.png\ta secret`)].join('\n') +
        '\n',
    );
    const created = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: 'through-link.csv',
      method: 'adapter',
      hyperparameters: HP,
    }).catch((e: grpc.ServiceError) => e);
    if ('job' in created) {
      const job = await waitForJob(
        ft,
        created.job.id,
        (j) =>
          ![
            'FINE_TUNE_JOB_STATE_QUEUED',
            'FINE_TUNE_JOB_STATE_VALIDATING_FILES',
            'FINE_TUNE_JOB_STATE_RUNNING',
          ].includes(j.state),
        60_000,
      );
      expect(job.state).toBe('FINE_TUNE_JOB_STATE_FAILED');
      expect(job.error.message).toMatch(/outside the data directory/);
    } else {
      expect([created.code, created.details]).toEqual([
        grpc.status.INVALID_ARGUMENT,
        expect.stringMatching(/outside the data directory/),
      ]);
    }
  });

  test('an image path that is a URL is a path, never a request', async () => {
    const { port } = listener.address() as { port: number };
    const csv =
      [
        'filepath\ttitle',
        ...Array.from({ length: 6 }, (_, i) => `http://127.0.0.1:${port}/secret${i}.png\tfetched`),
        ...Array.from({ length: 6 }, (_, i) => `file:///tmp/x${i}.png\tlocal`),
      ].join('\n') + '\n';
    fs.writeFileSync(path.join(dataDir, 'urls.csv'), csv);
    const created = await unary(ft, 'CreateFineTuneJob', {
      trainingFile: 'urls.csv',
      method: 'adapter',
      hyperparameters: HP,
    }).catch((e: grpc.ServiceError) => e);
    if ('job' in created) {
      const job = await waitForJob(
        ft,
        created.job.id,
        (j) =>
          ![
            'FINE_TUNE_JOB_STATE_QUEUED',
            'FINE_TUNE_JOB_STATE_VALIDATING_FILES',
            'FINE_TUNE_JOB_STATE_RUNNING',
          ].includes(j.state),
        60_000,
      );
      expect(job.state).toBe('FINE_TUNE_JOB_STATE_FAILED');
    } else {
      expect(created.code).toBe(grpc.status.INVALID_ARGUMENT);
    }
    expect(requests).toEqual([]);
  });
});

describe('the database refuses a dataset record after its files are in place', () => {
  /*
   * SQLITE_FULL (or any failure) in insertDataset, after the staging directory was renamed to
   * datasets/<id>: the directory goes again, so no dataset is on disk without a record.
   */
  test('the upload fails and leaves no unregistered dataset directory', async () => {
    const { DatasetCatalog } = await import('../../server/src/finetune/dataset');
    const { SqliteStore } = await import('../../server/src/store/sqlite-store');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-insertfail-'));
    const store = await SqliteStore.open(tmp);
    try {
      const catalog = new DatasetCatalog(store, tmp);
      const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      store.insertDataset = () => Promise.reject(full);
      const icon = (await iconDataset(16))[0].image;
      const upload = await catalog.beginUpload({ name: 'x', format: 'pairs' });
      upload.addPair(icon, 'a caption');
      await expect(upload.finish()).rejects.toBe(full);
      expect(fs.readdirSync(path.join(tmp, 'datasets'))).toEqual([]);
      // The same for a CSV path registered by reference.
      fs.writeFileSync(path.join(tmp, 'i.png'), icon);
      fs.writeFileSync(path.join(tmp, 'train.csv'), 'filepath\ttitle\ni.png\tan icon\n');
      await expect(catalog.resolve('train.csv')).rejects.toBe(full);
      expect(fs.readdirSync(path.join(tmp, 'datasets'))).toEqual([]);
    } finally {
      await store.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
