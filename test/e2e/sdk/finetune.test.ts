/**
 * @clipserve/sdk `fineTunes` and `models` against a real clipserve server (child process,
 * 127.0.0.1, a tiny random model, --data-dir): dataset uploads in all three formats (pairs read
 * lazily from paths and buffers, a zip sent in many chunks, a CSV naming images in the data dir),
 * an adapter job created, watched to the end, listed and fetched, its model activated; a cancel;
 * resumed and aborted watches; deadlines; and the typed errors of bad input.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import * as yazl from 'yazl';
import type { ClipClient, FineTuneEvent } from '../../../sdk/src/index';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { renderIcon, SHAPES, COLOURS } from '../../helpers/finetune-fixtures';
import { loadSdk, SDK_DIR, startClipServer, tempDir, type ClipServerProcess, rejection } from '../../helpers/sdk';

jest.setTimeout(120_000);

const sdk = loadSdk();
const { ClipClient: Client, Status } = sdk;

let server: ClipServerProcess;
let client: ClipClient;
let tmp: string;
let dataDir: string;
let pairs: { image: Buffer; caption: string }[];

async function collect(events: AsyncIterable<FineTuneEvent>): Promise<FineTuneEvent[]> {
  const out: FineTuneEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

function zipOf(files: Record<string, Buffer | string>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, data] of Object.entries(files))
    zip.addBuffer(Buffer.isBuffer(data) ? data : Buffer.from(data), name);
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

beforeAll(async () => {
  tmp = tempDir('sdk-finetune');
  dataDir = path.join(tmp, 'data');
  await writeRandomBundle({ arch: 'tiny', seed: 5, outDir: path.join(tmp, 'base') });
  server = await startClipServer({ args: ['--model', path.join(tmp, 'base'), '--data-dir', dataDir] });
  client = new Client({ address: server.address });
  pairs = [];
  for (const shape of SHAPES)
    for (const colour of Object.keys(COLOURS))
      pairs.push({ image: await renderIcon(shape, colour, 'white', 32), caption: `a ${colour} ${shape}` });
});

afterAll(async () => {
  client?.close();
  await server?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('fineTunes.uploadDataset', () => {
  test('pairs from an async iterable, images as paths and buffers, with progress', async () => {
    const dir = path.join(tmp, 'pair-files');
    fs.mkdirSync(dir, { recursive: true });
    pairs.slice(0, 5).forEach((p, i) => fs.writeFileSync(path.join(dir, `${i}.png`), p.image));
    async function* source(): AsyncGenerator<{ image: string | Buffer; caption: string }> {
      for (let i = 0; i < pairs.length; i++)
        yield { image: i < 5 ? path.join(dir, `${i}.png`) : pairs[i].image, caption: pairs[i].caption };
    }
    const progress: number[] = [];
    const ds = await client.fineTunes.uploadDataset(
      { name: 'icons', pairs: source() },
      { onProgress: (p) => progress.push(p.messages) },
    );
    expect(ds).toMatchObject({ name: 'icons', format: 'pairs', numPairs: pairs.length });
    expect(ds.id).toMatch(/^ds-/);
    expect(ds.createdAt).toBeInstanceOf(Date);
    expect(Math.abs(ds.createdAt.getTime() - Date.now())).toBeLessThan(120_000);
    expect(progress).toEqual(pairs.map((_, i) => i + 1));
  });

  test('a zip archive, from a file in many small chunks and from a buffer', async () => {
    const files: Record<string, Buffer | string> = {
      'data/pairs.tsv':
        'filepath\ttitle\n' +
        pairs
          .slice(0, 8)
          .map((p, i) => `img/${i}.png\t${p.caption}`)
          .join('\n') +
        '\n',
    };
    pairs.slice(0, 8).forEach((p, i) => (files[`data/img/${i}.png`] = p.image));
    const zip = await zipOf(files);
    const file = path.join(tmp, 'icons.zip');
    fs.writeFileSync(file, zip);
    let chunks = 0;
    const fromFile = await client.fineTunes.uploadDataset(
      { name: 'zipped', zip: file },
      { chunkBytes: 1024, onProgress: (p) => (chunks = p.messages) },
    );
    expect(fromFile).toMatchObject({ format: 'zip', numPairs: 8 });
    expect(chunks).toBe(Math.ceil(zip.length / 1024));
    const fromBuffer = await client.fineTunes.uploadDataset({ zip });
    expect(fromBuffer).toMatchObject({ format: 'zip', numPairs: 8 });
  });

  test('a CSV naming images already in the data directory, with its own columns', async () => {
    fs.mkdirSync(path.join(dataDir, 'shared-images'), { recursive: true });
    pairs.slice(0, 4).forEach((p, i) => fs.writeFileSync(path.join(dataDir, 'shared-images', `${i}.png`), p.image));
    const csv =
      'image,text\n' +
      pairs
        .slice(0, 4)
        .map((p, i) => `shared-images/${i}.png,${p.caption}`)
        .join('\n') +
      '\n';
    const ds = await client.fineTunes.uploadDataset({
      name: 'referenced',
      csv: Buffer.from(csv),
      columns: { imgKey: 'image', captionKey: 'text', separator: ',' },
    });
    expect(ds).toMatchObject({ format: 'csv', numPairs: 4 });
  });

  test("bad input: the server's INVALID_ARGUMENT; a missing image file fails locally with its index", async () => {
    const notZip = await rejection(client.fineTunes.uploadDataset({ zip: Buffer.from('this is not a zip archive') }));
    expect(notZip.code).toBe(Status.INVALID_ARGUMENT);
    expect(notZip.details).toMatch(/zip/);
    const missing = await rejection(
      client.fineTunes.uploadDataset({ pairs: [pairs[0], { image: path.join(tmp, 'nope.png'), caption: 'x' }] }),
    );
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.itemIndex).toBe(1);
    expect((await rejection(client.fineTunes.uploadDataset({ pairs: [], zip: Buffer.alloc(1) } as never))).code).toBe(
      Status.INVALID_ARGUMENT,
    );
  });

  test('an aborted upload rejects with CANCELLED', async () => {
    const ac = new AbortController();
    async function* slow(): AsyncGenerator<{ image: Buffer; caption: string }> {
      yield pairs[0];
      ac.abort();
      await new Promise((r) => setTimeout(r, 50));
      yield pairs[1];
    }
    const err = await rejection(client.fineTunes.uploadDataset({ pairs: slow() }, { signal: ac.signal }));
    expect(err.code).toBe(Status.CANCELLED);
  });

  test('listDatasets / listAllDatasets page through the datasets; deleteDataset removes one (record and files)', async () => {
    const before = [];
    for await (const d of client.fineTunes.listAllDatasets({ pageSize: 2 })) before.push(d.id);
    const kept = await client.fineTunes.uploadDataset({ name: 'kept', pairs: pairs.slice(0, 2) });
    const a = await client.fineTunes.uploadDataset({ name: 'to-delete', pairs: pairs.slice(0, 2) });
    const first = await client.fineTunes.listDatasets({ pageSize: 1 });
    expect(first.datasets.map((d) => d.id)).toEqual([a.id]);
    expect(first.nextPageToken).toBeDefined();
    const all = [];
    for await (const d of client.fineTunes.listAllDatasets({ pageSize: 2 })) all.push(d.id);
    expect(all).toEqual([a.id, kept.id, ...before]);
    expect(await client.fineTunes.deleteDataset(a.id)).toMatchObject({ id: a.id, name: 'to-delete', numPairs: 2 });
    expect(fs.existsSync(path.join(dataDir, 'datasets', a.id))).toBe(false);
    expect((await rejection(client.fineTunes.deleteDataset(a.id))).code).toBe(Status.NOT_FOUND);
  });
});

/**
 * A FineTuneService proxy whose first `drops` WatchFineTuneJob calls forward two events and then
 * fail with UNAVAILABLE, as a server restart or a lost connection would.
 */
async function startDroppingWatchProxy(
  backend: string,
  drops: number,
): Promise<{ address: string; afterSequences: number[]; close(): void }> {
  const def = protoLoader.loadSync('clipserve/v1/finetune.proto', {
    includeDirs: [path.join(SDK_DIR, 'proto')],
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const service = def['clipserve.v1.FineTuneService'] as grpc.ServiceDefinition;
  const Upstream = grpc.makeGenericClientConstructor(service, 'FineTuneService');
  const upstream = new Upstream(backend, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (...a: unknown[]) => grpc.ClientReadableStream<unknown>>;
  const afterSequences: number[] = [];
  const server = new grpc.Server();
  server.addService(service, {
    WatchFineTuneJob: (call: grpc.ServerWritableStream<{ afterSequence: number }, unknown>) => {
      afterSequences.push(call.request.afterSequence);
      const drop = afterSequences.length <= drops;
      const up = upstream.WatchFineTuneJob(call.request);
      let n = 0;
      up.on('data', (m) => {
        if (drop && n === 2) return;
        call.write(m);
        if (drop && ++n === 2) {
          up.cancel();
          call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'proxy: connection dropped' });
        }
      });
      up.on('error', (err: grpc.ServiceError) => {
        if (err.code !== grpc.status.CANCELLED) call.emit('error', err);
      });
      up.on('end', () => call.end());
      call.on('cancelled', () => up.cancel());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    afterSequences,
    close: () => {
      server.forceShutdown();
      upstream.close();
    },
  };
}

describe('fine-tune jobs and model versions', () => {
  let datasetId: string;
  let finishedJobId: string;
  beforeAll(async () => {
    datasetId = (await client.fineTunes.uploadDataset({ name: 'train', pairs })).id;
  });

  test('create → watch to the end → get / list → models.list → activate', async () => {
    const hp = { epochs: 2, batchSize: 8, learningRate: 0.01, warmupSteps: 1, validationSplit: 0.2, seed: 1 };
    const created = await client.fineTunes.create({
      trainingFile: datasetId,
      method: 'adapter',
      hyperparameters: hp,
      suffix: 'sdk',
    });
    expect(created).toMatchObject({
      state: 'queued',
      method: 'adapter',
      trainingFile: datasetId,
      suffix: 'sdk',
      fineTunedModel: '',
      error: null,
      startedAt: null,
    });
    // What was set comes back, and nothing else.
    expect(created.hyperparameters).toEqual(hp);

    const events = await collect(client.fineTunes.watch(created.id));
    expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === 'state').map((e) => e.state)).toEqual([
      'queued',
      'validating_files',
      'running',
      'succeeded',
    ]);
    const steps = events.filter((e) => e.type === 'step');
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.every((s) => s.loss > 0 && s.learningRate > 0 && s.step > 0)).toBe(true);
    expect(events.filter((e) => e.type === 'epoch')).toHaveLength(2);
    expect(events.some((e) => e.type === 'report')).toBe(true);
    expect(events[events.length - 1].jobState).toBe('succeeded');
    expect(events.every((e) => e.createdAt instanceof Date && typeof e.data === 'object')).toBe(true);

    // Resuming from the middle replays the rest only.
    const resumed = await collect(client.fineTunes.watch(created.id, { afterSequence: 3 }));
    expect(resumed.map((e) => e.sequence)).toEqual(events.slice(3).map((e) => e.sequence));

    const job = await client.fineTunes.get(created.id);
    finishedJobId = job.id;
    expect(job.state).toBe('succeeded');
    expect(job.fineTunedModel).not.toBe('');
    expect(job.step).toBe(job.totalSteps);
    expect(Object.keys(job.metricsAfter)).toContain('text_to_image_R@1');
    expect(job.finishedAt!.getTime()).toBeGreaterThanOrEqual(job.startedAt!.getTime());

    const page = await client.fineTunes.list({ pageSize: 1 });
    expect(page.jobs).toHaveLength(1);
    expect(page.jobs[0].id).toBe(created.id);
    const all: string[] = [];
    for await (const j of client.fineTunes.listAll({ pageSize: 1 })) all.push(j.id);
    expect(all).toContain(created.id);
    expect(new Set(all).size).toBe(all.length);

    const before = await client.models.list();
    const base = before.activeVersion;
    const tuned = before.models.find((m) => m.version === job.fineTunedModel)!;
    expect(tuned).toMatchObject({ parentVersion: base, fineTuneJobId: created.id, active: false });
    expect(before.models.find((m) => m.version === base)!.active).toBe(true);

    const activated = await client.models.activate(job.fineTunedModel);
    expect(activated.previousVersion).toBe(base);
    expect(activated.model).toMatchObject({ version: job.fineTunedModel, active: true });
    expect((await client.modelInfo()).version).toBe(job.fineTunedModel);
    expect((await client.models.list()).activeVersion).toBe(job.fineTunedModel);
    // The previous version stays served to calls that pin it (an index built with it).
    const progress: string[] = [];
    const [pinned] = await client.embedTexts(['a red star'], {
      modelVersion: base,
      onProgress: (p) => progress.push(p.modelVersion),
    });
    const [unpinned] = await client.embedTexts(['a red star'], { onProgress: (p) => progress.push(p.modelVersion) });
    expect(progress).toEqual([base, job.fineTunedModel]);
    expect(Array.from(pinned)).not.toEqual(Array.from(unpinned));
    const listed = await client.models.list();
    expect(listed.loadedVersions).toEqual([job.fineTunedModel, base]);
    expect(listed.models.find((m) => m.version === base)!.loaded).toBe(true);
    expect(await client.modelInfo({ modelVersion: base })).toMatchObject({
      version: base,
      activeVersion: job.fineTunedModel,
      loadedVersions: [job.fineTunedModel, base],
    });
    // Back to the base model, so the other tests see what they expect.
    await client.models.activate(base);
  });

  test('watch reconnects after UNAVAILABLE from the last event it delivered; without retries the error surfaces', async () => {
    const direct = await collect(client.fineTunes.watch(finishedJobId));
    const proxy = await startDroppingWatchProxy(server.address, 2);
    const viaProxy = new Client({ address: proxy.address, retry: { initialBackoffMs: 10 } });
    try {
      const events = await collect(viaProxy.fineTunes.watch(finishedJobId));
      expect(events.map((e) => e.sequence)).toEqual(direct.map((e) => e.sequence));
      expect(proxy.afterSequences).toEqual([0, 2, 4]);
    } finally {
      viaProxy.close();
      proxy.close();
    }
    const strictProxy = await startDroppingWatchProxy(server.address, 1);
    const strict = new Client({ address: strictProxy.address, retry: false });
    try {
      const seen: number[] = [];
      const err = await rejection(
        (async () => {
          for await (const e of strict.fineTunes.watch(finishedJobId)) seen.push(e.sequence);
        })(),
      );
      expect(err.code).toBe(Status.UNAVAILABLE);
      expect(seen).toEqual([1, 2]);
    } finally {
      strict.close();
      strictProxy.close();
    }
  });

  test('cancel stops a running job; its watch ends with the cancelled state', async () => {
    const job = await client.fineTunes.create({
      trainingFile: datasetId,
      hyperparameters: { epochs: 5000, batchSize: 8, validationSplit: 0.2 },
    });
    const seen: FineTuneEvent[] = [];
    let cancelled: Promise<unknown> | undefined;
    for await (const e of client.fineTunes.watch(job.id)) {
      seen.push(e);
      if (e.type === 'step' && !cancelled) cancelled = client.fineTunes.cancel(job.id);
    }
    const after = (await cancelled) as { state: string };
    expect(['running', 'cancelled']).toContain(after.state);
    expect(seen[seen.length - 1].jobState).toBe('cancelled');
    expect((await client.fineTunes.get(job.id)).state).toBe('cancelled');
    // Cancelling a finished job is refused.
    expect((await rejection(client.fineTunes.cancel(job.id))).code).toBe(Status.FAILED_PRECONDITION);
  });

  test('breaking out of a watch, or aborting it, cancels the call', async () => {
    const job = await client.fineTunes.create({
      trainingFile: datasetId,
      hyperparameters: { epochs: 5000, batchSize: 8 },
    });
    try {
      let n = 0;
      for await (const e of client.fineTunes.watch(job.id)) {
        expect(e.sequence).toBe(++n);
        if (n === 2) break;
      }
      expect(n).toBe(2);
      const ac = new AbortController();
      const err = await rejection(
        (async () => {
          for await (const e of client.fineTunes.watch(job.id, { signal: ac.signal }))
            if (e.type === 'step') ac.abort();
        })(),
      );
      expect(err.code).toBe(Status.CANCELLED);
      const timed = await rejection(collect(client.fineTunes.watch(job.id, { timeoutMs: 300 })));
      expect(timed.code).toBe(Status.DEADLINE_EXCEEDED);
    } finally {
      await client.fineTunes.cancel(job.id).catch(() => undefined);
    }
  });

  test('typed errors: unknown job / version, bad hyperparameters, no cluster for `full`, deadlines and aborts', async () => {
    expect((await rejection(client.fineTunes.get('ftjob-doesnotexist'))).code).toBe(Status.NOT_FOUND);
    expect((await rejection(client.models.activate('no-such-version'))).code).toBe(Status.NOT_FOUND);
    const missing = await rejection(client.fineTunes.create({ trainingFile: 'ds-missing' }));
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.details).toMatch(/no dataset ds-missing/);
    const hp = await rejection(
      client.fineTunes.create({ trainingFile: datasetId, hyperparameters: { learningRate: -1 } }),
    );
    expect(hp.code).toBe(Status.INVALID_ARGUMENT);
    // Caught before sending: a misspelt hyperparameter would otherwise be silently ignored.
    const typo = await rejection(
      client.fineTunes.create({ trainingFile: datasetId, hyperparameters: { learningrate: 0.1 } as never }),
    );
    expect(typo.details).toMatch(/unknown hyperparameter "learningrate"/);
    // The server has no Kubernetes cluster (none configured in this test environment).
    const hasKubeconfig =
      Boolean(process.env.KUBECONFIG) ||
      fs.existsSync(path.join(os.homedir(), '.kube', 'config')) ||
      Boolean(process.env.KUBERNETES_SERVICE_HOST);
    const full = await rejection(client.fineTunes.create({ trainingFile: datasetId, method: 'full' }));
    expect(full.code).toBe(Status.FAILED_PRECONDITION);
    expect(full.details).toMatch(hasKubeconfig ? /no trainer image|Kubernetes/ : /no Kubernetes cluster is configured/);

    expect((await rejection(client.models.list({ deadline: new Date(Date.now() - 1) }))).code).toBe(
      Status.DEADLINE_EXCEEDED,
    );
    const ac = new AbortController();
    ac.abort();
    expect((await rejection(client.fineTunes.list({}, { signal: ac.signal }))).code).toBe(Status.CANCELLED);
    expect((await rejection(collect(client.fineTunes.watch('ftjob-x', { signal: ac.signal })))).code).toBe(
      Status.CANCELLED,
    );
  });
});
