/**
 * Server lifecycle with the real demo model: health NOT_SERVING until the model is loaded and
 * warm, SERVING after, NOT_SERVING while draining (new calls UNAVAILABLE, in-flight ones finish);
 * TLS, mutual TLS and the plaintext health-only port; and the CLI process: configuration
 * precedence, then SIGTERM during 50 in-flight calls — all complete OK and the process exits 0.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import pino from 'pino';
import { loadServedModel } from '../../../server/src/serve/model-loader';
import { RunningServer } from '../../../server/src/serve/server';
import { compiledModule, PROTO_DIR } from '../../../server/src/util/paths';
import { HAVE_OPENSSL } from '../../helpers/openssl';
import { startTestServer, TEST_CACHE_DIR } from '../../helpers/server';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const LOADER_OPTIONS = { defaults: true, oneofs: true, enums: String, longs: Number };
const api = grpc.loadPackageDefinition(
  protoLoader.loadSync(['clipserve/v1/embedding.proto'], { includeDirs: [PROTO_DIR], ...LOADER_OPTIONS }),
) as Any;
const healthApi = grpc.loadPackageDefinition(protoLoader.loadSync(HEALTH_PROTO, LOADER_OPTIONS)) as Any;

function clients(address: string, creds = grpc.credentials.createInsecure()): { api: Any; health: Any; close(): void } {
  const a = new api.clipserve.v1.EmbeddingService(address, creds);
  const h = new healthApi.grpc.health.v1.Health(address, creds);
  return { api: a, health: h, close: () => (a.close(), h.close()) };
}

function call(client: Any, method: string, req: object, deadlineMs = 20_000): Promise<Any> {
  return new Promise((resolve, reject) =>
    client[method](req, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: Any) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

const healthOf = async (c: { health: Any }, service: string) =>
  (await call(c.health, 'Check', { service })).status as string;

describe('health and drain (in process)', () => {
  test('NOT_SERVING while loading, SERVING when warm, NOT_SERVING while draining; in-flight calls finish', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const server = await startTestServer({
      waitUntilReady: false,
      // The real loader, held until the test has looked at the loading phase.
      loadModel: async (config, logger) => {
        await gate;
        return loadServedModel(config, logger);
      },
    });
    const c = clients(`127.0.0.1:${server.port}`);
    try {
      expect(await healthOf(c, '')).toBe('NOT_SERVING');
      expect(await healthOf(c, 'clipserve.v1.EmbeddingService')).toBe('NOT_SERVING');
      expect(server.isReady()).toBe(false);
      const early = await failure(call(c.api, 'EmbedText', { texts: ['too early'] }));
      expect([early.code, early.details]).toEqual([
        grpc.status.UNAVAILABLE,
        'server is starting: the model is still loading',
      ]);

      release();
      await server.ready;
      expect(server.isReady()).toBe(true);
      expect(await healthOf(c, '')).toBe('SERVING');
      expect(await healthOf(c, 'clipserve.v1.EmbeddingService')).toBe('SERVING');
      expect((await failure(call(c.health, 'Check', { service: 'no.such.Service' }))).code).toBe(grpc.status.NOT_FOUND);

      // An open stream is an in-flight call: the drain waits for it.
      const stream = c.api.EmbedStream();
      const results: Any[] = [];
      stream.on('data', (r: Any) => results.push(r));
      stream.on('error', () => undefined);
      const streamStatus = new Promise<grpc.StatusObject>((r) => stream.on('status', r));
      stream.write({ id: 'before-drain', text: 'one' });
      while (results.length < 1) await new Promise((r) => setTimeout(r, 10));

      let stopped = false;
      const shutdown = server.shutdown(30).then(() => (stopped = true));
      expect(await healthOf(c, '')).toBe('NOT_SERVING');
      expect(await healthOf(c, 'clipserve.v1.EmbeddingService')).toBe('NOT_SERVING');
      expect(server.isReady()).toBe(false);
      const refused = await failure(call(c.api, 'EmbedText', { texts: ['too late'] }));
      expect([refused.code, refused.details]).toEqual([grpc.status.UNAVAILABLE, 'server is shutting down']);

      // The in-flight stream still works, and the drain completes when it ends.
      stream.write({ id: 'during-drain', text: 'two' });
      while (results.length < 2) await new Promise((r) => setTimeout(r, 10));
      expect(stopped).toBe(false);
      stream.end();
      expect((await streamStatus).code).toBe(grpc.status.OK);
      await shutdown;
      expect(results.map((r) => [r.id, r.result])).toEqual([
        ['before-drain', 'embedding'],
        ['during-drain', 'embedding'],
      ]);
      expect(server.phase()).toBe('stopped');
    } finally {
      c.close();
      release();
      await server.shutdown(0);
    }
  });

  test('a drain that outlasts the grace period cancels what is left and still stops', async () => {
    const server = await startTestServer();
    const c = clients(`127.0.0.1:${server.port}`);
    const stream = c.api.EmbedStream(); // never ended by the client
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    const status = new Promise<grpc.StatusObject>((r) => stream.on('status', r));
    stream.write({ id: 'x', text: 'x' });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await server.shutdown(0.3);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect((await status).code).not.toBe(grpc.status.OK);
    c.close();
  });
});

describe('startup failures', () => {
  test('a port in use fails startServer with a clear error, before any model is loaded', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const busy = (blocker.address() as net.AddressInfo).port;
    let loaded = false;
    try {
      await expect(
        startTestServer({
          port: busy,
          loadModel: async () => ((loaded = true), Promise.reject(new Error('unreachable'))),
        }),
      ).rejects.toThrow(`cannot listen on 127.0.0.1:${busy}`);
      expect(loaded).toBe(false);
    } finally {
      blocker.close();
    }
  });

  test('a metrics port in use fails startServer and stops what it had started (API-key reloads, the data store)', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const busy = (blocker.address() as net.AddressInfo).port;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-start-fail-'));
    const keysFile = path.join(dir, 'keys.txt');
    fs.writeFileSync(keysFile, 'first-key-0123456789abcdef embed a\n');
    const lines: string[] = [];
    const logger = pino(
      { level: 'info' },
      new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }),
    );
    try {
      await expect(
        startTestServer({
          metricsPort: busy,
          dataDir: path.join(dir, 'data'),
          apiKeysFile: keysFile,
          credentialsReloadSeconds: 0.05,
          logger,
          loadModel: () => new Promise(() => undefined),
        }),
      ).rejects.toThrow(String(busy));
      // A watcher left running would pick this up within 50 ms and log it.
      fs.writeFileSync(keysFile, 'second-key-0123456789abcdef embed b\n');
      await new Promise((r) => setTimeout(r, 300));
      expect(lines.filter((l) => l.includes('API keys reloaded'))).toEqual([]);
      // The SQLite store was closed: its write-ahead log was checkpointed away.
      expect(fs.readdirSync(path.join(dir, 'data')).filter((f) => f.endsWith('-wal'))).toEqual([]);
    } finally {
      blocker.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a model that fails to load fails startServer and releases its ports', async () => {
    await expect(startTestServer({ model: path.join(os.tmpdir(), 'clipserve-no-such-bundle') })).rejects.toThrow(
      /clipserve-no-such-bundle/,
    );
  });
});

if (!HAVE_OPENSSL) console.warn('\n!!! SKIPPING TLS tests: openssl not found !!!\n');

(HAVE_OPENSSL ? describe : describe.skip)('TLS, mutual TLS and the plaintext health port', () => {
  let dir: string;
  let server: RunningServer;
  const pem = (name: string) => fs.readFileSync(path.join(dir, name));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-tls-'));
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=clipserve test CA',
    );
    fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'server.key',
      '-out',
      'server.csr',
      '-subj',
      '/CN=localhost',
    );
    ssl(
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '2',
      '-extfile',
      'server.ext',
    );
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=client');
    ssl(
      'x509',
      '-req',
      '-in',
      'client.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'client.pem',
      '-days',
      '2',
    );
    server = await startTestServer({
      healthPort: 0,
      tlsCert: path.join(dir, 'server.pem'),
      tlsKey: path.join(dir, 'server.key'),
      tlsClientCa: path.join(dir, 'ca.pem'),
    });
  });

  afterAll(async () => {
    await server?.shutdown(1);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a client with a CA-signed certificate is served', async () => {
    const c = clients(
      `localhost:${server.port}`,
      grpc.credentials.createSsl(pem('ca.pem'), pem('client.key'), pem('client.pem')),
    );
    try {
      expect(await call(c.api, 'GetModelInfo', {})).toMatchObject({ demo: true });
      expect(await healthOf(c, '')).toBe('SERVING');
    } finally {
      c.close();
    }
  });

  test('without a client certificate, or in plaintext, the API port refuses', async () => {
    for (const creds of [grpc.credentials.createSsl(pem('ca.pem')), grpc.credentials.createInsecure()]) {
      const c = clients(`localhost:${server.port}`, creds);
      try {
        expect((await failure(call(c.api, 'GetModelInfo', {}, 3000))).code).toBe(grpc.status.UNAVAILABLE);
      } finally {
        c.close();
      }
    }
  });

  test('the plaintext health port serves only grpc.health.v1', async () => {
    expect(server.healthPort).toBeGreaterThan(0);
    const c = clients(`127.0.0.1:${server.healthPort}`);
    try {
      expect(await healthOf(c, '')).toBe('SERVING');
      expect(await healthOf(c, 'clipserve.v1.EmbeddingService')).toBe('SERVING');
      expect((await failure(call(c.api, 'GetModelInfo', {}))).code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      c.close();
    }
  });
});

describe('clipserve serve (child process)', () => {
  let child: ChildProcess;
  let port: number;
  let dir: string;
  const output: string[] = [];
  let exit: Promise<number | null>;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-cli-'));
    const configFile = path.join(dir, 'serve.json');
    // Precedence under test: flag > CLIPSERVE_* > --config file > default.
    fs.writeFileSync(
      configFile,
      JSON.stringify({ maxItemsPerRequest: 9, maxImageBytes: 123_456, maxImagePixels: 1000, maxBatchSize: 7 }),
    );
    child = spawn(
      process.execPath,
      [
        compiledModule('cli/main'),
        'serve',
        '--config',
        configFile,
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--metrics-port',
        '0',
        '--http-port',
        '0',
        '--max-image-pixels',
        '2000',
        '--max-batch-size',
        '64',
        '--shutdown-grace-seconds',
        '20',
      ],
      {
        env: {
          ...process.env,
          CLIPSERVE_CACHE_DIR: TEST_CACHE_DIR,
          CLIPSERVE_MAX_ITEMS_PER_REQUEST: '11',
          // 50 single-text calls wait in the queue for this long: they are in flight at SIGTERM.
          CLIPSERVE_MAX_QUEUE_DELAY_MS: '1500',
          CLIPSERVE_LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    child.stderr!.on('data', (b: Buffer) => output.push(b.toString()));
    port = await new Promise<number>((resolve, reject) => {
      let buffered = '';
      let listening: number | undefined;
      child.stdout!.on('data', (b: Buffer) => {
        output.push(b.toString());
        buffered += b.toString();
        for (;;) {
          const nl = buffered.indexOf('\n');
          if (nl < 0) break;
          const line = JSON.parse(buffered.slice(0, nl)) as { msg: string; port?: number };
          buffered = buffered.slice(nl + 1);
          if (line.msg === 'grpc server listening') listening = line.port;
          if (line.msg === 'model ready: serving' && listening) resolve(listening);
        }
      });
      child.on('exit', (code) =>
        reject(new Error(`serve exited with ${code} before it was ready:\n${output.join('')}`)),
      );
    });
  });

  afterAll(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('flags beat CLIPSERVE_* variables, which beat the --config file, which beats defaults', async () => {
    const c = clients(`127.0.0.1:${port}`);
    try {
      const info = await call(c.api, 'GetModelInfo', {});
      expect(info.limits).toEqual({
        maxItemsPerRequest: 11,
        maxImageBytes: 123_456,
        maxImagePixels: 2000,
        maxMessageBytes: 64 * 1024 * 1024,
        maxBatchSize: 64,
        maxTextChars: 16_384,
      });
    } finally {
      c.close();
    }
  });

  test('SIGTERM during 50 in-flight calls: all 50 complete OK, new calls are refused, the process exits 0', async () => {
    const c = clients(`127.0.0.1:${port}`);
    try {
      const calls = Array.from({ length: 50 }, (_, i) =>
        call(c.api, 'EmbedText', { texts: [`in flight ${i}`] }, 30_000),
      );
      // Wait until the calls are in the server (the queue delay holds them for 1.5 s).
      await new Promise((r) => setTimeout(r, 400));
      child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      const refused = await failure(call(c.api, 'EmbedText', { texts: ['after SIGTERM'] }, 5000));
      expect(refused.code).toBe(grpc.status.UNAVAILABLE);
      const results = await Promise.allSettled(calls);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      expect(results.every((r) => r.status === 'fulfilled' && r.value.embeddings.length === 1)).toBe(true);
      expect(await exit).toBe(0);
      const log = output.join('');
      expect(log).toMatch(/"signal":"SIGTERM"/);
      expect(log).toMatch(/"msg":"server stopped"/);
    } finally {
      c.close();
    }
  });
});
