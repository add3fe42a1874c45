/**
 * API-key isolation under attack and under operator mistakes (issue 13 items 9 and 10), on the
 * real server over loopback:
 *  - a request with two `authorization` headers (raw HTTP/2 frames: Node's client refuses to send
 *    them, others do not) is refused UNAUTHENTICATED by the "more than one" check instead of being
 *    admitted on the first value;
 *  - a key file that is deleted, emptied, replaced by a directory, left with comments only or given
 *    a typo is counted (clipserve_credentials_reload_errors_total, the last-success timestamp stops)
 *    and, by --auth-reload-failure, keeps the last keys (keep) or refuses keyed calls until a good
 *    reload (deny);
 *  - datasets belong to the key that uploaded them: another key neither lists, deletes nor trains on them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { RunningServer } from '../../server/src/serve/server';
import { rawHttp2Request } from '../helpers/raw-h2';
import { startTestServer } from '../helpers/server';
import { bearer, embeddingClient, fineTuneClient, outcome } from '../helpers/clients';

jest.setTimeout(120_000);

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const KEY = 'embed-key-0123456789abcdef';
const OTHER = 'other-key-0123456789abcdef';
const RELOAD_SECONDS = 0.1;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function getModelInfo(port: number, key: string): Promise<grpc.status> {
  const client = embeddingClient(port);
  return outcome(client.GetModelInfo({}, bearer(key)))
    .then((r) => r.code)
    .finally(() => client.close());
}

/** The value of one series in the server's scrape (0 when absent). */
async function metric(server: RunningServer, series: RegExp): Promise<number> {
  const text = await server.metrics.registry.metrics();
  const line = text.split('\n').find((l) => series.test(l));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function until(what: string, probe: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await probe()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for: ${what}`);
}

describe('API keys under attack and under bad edits', () => {
  let tmp: string;

  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-hardening-auth-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function serve(policy: 'keep' | 'deny'): Promise<{ server: RunningServer; keysFile: string }> {
    const keysFile = path.join(tmp, `keys-${policy}.txt`);
    fs.writeFileSync(keysFile, `${KEY} embed ci\n`);
    const server = await startTestServer({
      apiKeysFile: keysFile,
      credentialsReloadSeconds: RELOAD_SECONDS,
      authReloadFailure: policy,
    });
    return { server, keysFile };
  }

  test('two authorization headers: the "more than one" check runs (UNAUTHENTICATED), even when the first key is good', async () => {
    const { server } = await serve('keep');
    try {
      const handled = (code: string) =>
        metric(server, new RegExp(`^grpc_server_handled_total\\{.*grpc_method="GetModelInfo".*grpc_code="${code}"`));
      const headers = (auth: string[]): [string, string][] => [
        [':method', 'POST'],
        [':scheme', 'http'],
        [':path', '/clipserve.v1.EmbeddingService/GetModelInfo'],
        [':authority', '127.0.0.1'],
        ['content-type', 'application/grpc'],
        ['te', 'trailers'],
        ...auth.map((a): [string, string] => ['authorization', a]),
      ];
      const emptyMessage = Buffer.alloc(5);
      await rawHttp2Request(server.port, headers([`Bearer ${KEY}`]), emptyMessage);
      await until('the single-header call to be counted OK', async () => (await handled('OK')) === 1);
      for (const pair of [
        [`Bearer ${KEY}`, `Bearer ${OTHER}`],
        [`Bearer ${OTHER}`, `Bearer ${KEY}`],
        [`Bearer ${KEY}`, `Bearer ${KEY}`],
      ]) {
        await rawHttp2Request(server.port, headers(pair), emptyMessage);
      }
      await until(
        'the three duplicate-header calls to be refused',
        async () => (await handled('Unauthenticated')) === 3,
      );
      expect(await handled('OK')).toBe(1);
    } finally {
      await server.shutdown(0);
    }
  });

  const badEdits: [string, (file: string) => void][] = [
    ['deleted', (f) => fs.rmSync(f)],
    ['emptied', (f) => fs.writeFileSync(f, '')],
    ['replaced by a directory', (f) => (fs.rmSync(f), fs.mkdirSync(f))],
    ['comments only', (f) => fs.writeFileSync(f, '# every key revoked\n')],
    ['a typo on another line', (f) => fs.writeFileSync(f, `${KEY} embed ci\n${OTHER} embedd typo\n`)],
  ];

  test.each(badEdits)(
    'key file %s: counted; keep holds the last keys, deny refuses keyed calls until a good reload',
    async (_what, edit) => {
      for (const policy of ['keep', 'deny'] as const) {
        const { server, keysFile } = await serve(policy);
        const errors = () => metric(server, /^clipserve_credentials_reload_errors_total\{credential="api_keys"\}/);
        const lastSuccess = () =>
          metric(server, /^clipserve_credentials_last_reload_success_timestamp_seconds\{credential="api_keys"\}/);
        try {
          expect(await getModelInfo(server.port, KEY)).toBe(grpc.status.OK);
          expect(await errors()).toBe(0);
          await until('a successful check to be stamped', async () => (await lastSuccess()) > 0);
          edit(keysFile);
          await until('the failed reload to be counted', async () => (await errors()) >= 2);
          const stamped = await lastSuccess();
          await sleep(5 * RELOAD_SECONDS * 1000);
          expect(await lastSuccess()).toBe(stamped); // no success while the file is bad
          expect([policy, await getModelInfo(server.port, KEY)]).toEqual([
            policy,
            policy === 'keep' ? grpc.status.OK : grpc.status.UNAVAILABLE,
          ]);
          // A good file again: calls are accepted under either policy, and success is stamped again.
          fs.rmSync(keysFile, { recursive: true, force: true });
          fs.writeFileSync(keysFile, `${KEY} embed ci\n`);
          await until('a good reload', async () => (await getModelInfo(server.port, KEY)) === grpc.status.OK);
          await until('success stamped again', async () => (await lastSuccess()) > stamped);
        } finally {
          await server.shutdown(0);
        }
      }
    },
  );

  test('datasets belong to the key that uploaded them', async () => {
    const TUNE_A = 'tune-a-key-0123456789abcdef';
    const TUNE_B = 'tune-b-key-0123456789abcdef';
    const server = await startTestServer({
      dataDir: path.join(tmp, 'data'),
      apiKeys: `${TUNE_A} finetune a; ${TUNE_B} finetune b`,
    });
    const ft = fineTuneClient(server.port);
    try {
      const fsImage = path.join(tmp, 'data', 'a.png');
      fs.mkdirSync(path.dirname(fsImage), { recursive: true });
      fs.writeFileSync(fsImage, Buffer.from('not decoded at upload'));
      const uploaded = await new Promise<Any>((resolve, reject) => {
        const call = ft.raw.UploadDataset(bearer(TUNE_A), (err, res) => (err ? reject(err) : resolve(res!.dataset!)));
        call.write({ header: { name: 'mine', format: 'DATASET_FORMAT_CSV' } });
        call.write({ chunk: Buffer.from('filepath\ttitle\na.png\tan image\n') });
        call.end();
      });
      expect((await outcome(ft.ListDatasets({}, bearer(TUNE_A)))).res!.datasets.map((d) => d.id)).toEqual([
        uploaded.id,
      ]);
      expect((await outcome(ft.ListDatasets({}, bearer(TUNE_B)))).res!.datasets).toEqual([]);
      expect((await outcome(ft.DeleteDataset({ datasetId: uploaded.id }, bearer(TUNE_B)))).code).toBe(
        grpc.status.NOT_FOUND,
      );
      expect(
        (await outcome(ft.CreateFineTuneJob({ trainingFile: uploaded.id, method: 'adapter' }, bearer(TUNE_B)))).code,
      ).toBe(grpc.status.NOT_FOUND);
      expect((await outcome(ft.DeleteDataset({ datasetId: uploaded.id }, bearer(TUNE_A)))).code).toBe(grpc.status.OK);
    } finally {
      ft.close();
      await server.shutdown(0);
    }
  });
});
