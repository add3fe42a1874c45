/**
 * API keys with scopes: the key-list formats, the constant-time store, and the interceptor in a
 * real server (demo model): UNAUTHENTICATED without or with a wrong key, PERMISSION_DENIED without
 * the scope, health and reflection open unless configured otherwise, keys reloaded from the file,
 * handlers never seeing the authorization header, keys never in logs or metrics, and the CLI
 * refusing keys on its command line.
 */
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import pino from 'pino';
import { ApiKeySource, ApiKeyStore, ApiKeysError, AuthPolicy, digestOf, parseApiKeys } from '../../../server/src/auth';
import { RunningServer, startServer } from '../../../server/src/serve/server';
import { compiledModule } from '../../../server/src/util/paths';
import { startTestServer } from '../../helpers/server';
import { embeddingClient, fineTuneClient, modelClient } from '../../helpers/clients';

// Counts the store's comparisons (the real function still does the work).
jest.mock('node:crypto', () => {
  const actual = jest.requireActual('node:crypto');
  return { ...actual, timingSafeEqual: jest.fn(actual.timingSafeEqual) };
});

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const LOADER_OPTIONS = { defaults: true, oneofs: true, enums: String, longs: Number };
const healthApi = grpc.loadPackageDefinition(protoLoader.loadSync(HEALTH_PROTO, LOADER_OPTIONS)) as Any;

const EMBED_KEY = 'embed-key-0123456789abcdef';
const TUNE_KEY = 'finetune-key-0123456789abcdef';
const ADMIN_KEY = 'admin.key_0123456789~ABCDEF+/==';
const HASHED_KEY = 'only-its-digest-is-in-the-file-42';

describe('key lists', () => {
  test('text format: comments, names, several scopes, ";" separators, sha256: digests', () => {
    const text = [
      '# clipserve keys',
      `${EMBED_KEY} embed   ci runner`,
      '',
      `${ADMIN_KEY} embed,admin`,
      `sha256:${digestOf(HASHED_KEY).toString('hex')} finetune tuner`,
    ].join('\n');
    const entries = parseApiKeys(text, 'test');
    expect(entries.map((e) => [e.name, [...e.scopes]])).toEqual([
      ['ci runner', ['embed']],
      ['line 4', ['embed', 'admin']],
      ['tuner', ['finetune']],
    ]);
    expect(entries[0].digest.equals(digestOf(EMBED_KEY))).toBe(true);
    const env = parseApiKeys(`${EMBED_KEY} embed a; ${TUNE_KEY} finetune b`, 'CLIPSERVE_API_KEYS');
    expect(env.map((e) => e.name)).toEqual(['a', 'b']);
  });

  test('JSON format (the Kubernetes Secret holds api-keys.json)', () => {
    const json = JSON.stringify({
      keys: [
        { key: EMBED_KEY, scopes: ['embed'], name: 'web' },
        { sha256: digestOf(HASHED_KEY).toString('hex'), scopes: 'admin' },
      ],
    });
    const entries = parseApiKeys(json, 'test');
    expect(entries.map((e) => [e.name, [...e.scopes]])).toEqual([
      ['web', ['embed']],
      ['keys[1]', ['admin']],
    ]);
    expect(parseApiKeys(JSON.stringify([{ key: TUNE_KEY, scopes: ['finetune'] }]), 'test')).toHaveLength(1);
  });

  test('bad entries are refused naming the entry, never quoting the key', () => {
    const secret = 'Sup3rShort1';
    const cases: [string, RegExp][] = [
      ['short-key embed', /entry 1: key is shorter than 16/],
      [`${EMBED_KEY}`, /entry 1: expected "<key> <scope>/],
      [`${EMBED_KEY} embed,write`, /unknown scope "write"/],
      [`# c\n${EMBED_KEY} embed\n${EMBED_KEY} admin x`, /x repeats the key of line 2/],
      ['k\u00e9y-with-an-accent-0123 embed', /entry 1: key has characters outside/],
      ['sha256:abc embed', /64 hex digits/],
      [`{"keys": [{"key": "${EMBED_KEY}", "scopes": []}]}`, /keys\[0\]: at least one scope/],
      [`{"keys": [{"key": "${EMBED_KEY}", "scope": ["embed"]}]}`, /unknown field "scope"/],
      [`{"keys": [{"key": "${secret}${secret}", "scopes": ["embed"],}]}`, /not valid JSON/],
      [`[{"key": "${secret}", "scopes": ["embed"]}]`, /shorter than 16/],
    ];
    for (const [text, message] of cases) {
      let caught: unknown;
      try {
        parseApiKeys(text, 'keys.txt');
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ApiKeysError);
      expect((caught as Error).message).toMatch(message);
      expect((caught as Error).message).not.toContain(secret);
      expect((caught as Error).message).not.toContain(EMBED_KEY);
    }
  });

  test('the store matches keys by digest and compares every entry, whatever the outcome', () => {
    const store = new ApiKeyStore(
      parseApiKeys(`${EMBED_KEY} embed first\n${TUNE_KEY} finetune second\n${ADMIN_KEY} admin third`, 't'),
    );
    const compare = crypto.timingSafeEqual as jest.MockedFunction<typeof crypto.timingSafeEqual>;
    for (const [key, name] of [
      [EMBED_KEY, 'first'],
      [ADMIN_KEY, 'third'],
      [`${EMBED_KEY}x`, undefined],
      ['', undefined],
    ] as const) {
      compare.mockClear();
      expect(store.authenticate(key)?.name).toBe(name);
      expect(compare).toHaveBeenCalledTimes(3);
    }
  });

  test('policy: each service its scope; unknown services need admin; health and reflection configurable', () => {
    const open = new AuthPolicy();
    expect(open.requirement('/clipserve.v1.EmbeddingService/EmbedText')).toEqual({ kind: 'scope', scope: 'embed' });
    expect(open.requirement('/clipserve.v1.FineTuneService/CreateFineTuneJob')).toEqual({
      kind: 'scope',
      scope: 'finetune',
    });
    expect(open.requirement('/clipserve.v1.ModelService/ActivateModel')).toEqual({ kind: 'scope', scope: 'admin' });
    expect(open.requirement('/clipserve.v2.Whatever/Do')).toEqual({ kind: 'scope', scope: 'admin' });
    expect(open.requirement('/grpc.health.v1.Health/Check')).toEqual({ kind: 'open' });
    expect(open.requirement('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo')).toEqual({ kind: 'open' });
    const closed = new AuthPolicy({ openHealth: false, openReflection: false });
    expect(closed.requirement('/grpc.health.v1.Health/Watch')).toEqual({ kind: 'authenticated' });
    expect(closed.requirement('/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo')).toEqual({
      kind: 'authenticated',
    });
  });
});

function metadataWith(authorization?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (authorization !== undefined) md.set('authorization', authorization);
  return md;
}

function call(
  client: Any,
  method: string,
  req: object,
  md: grpc.Metadata,
): Promise<{ code: grpc.status; details?: string; res?: Any }> {
  return new Promise((resolve) =>
    client[method](req, md, { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, res: Any) =>
      resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, res }),
    ),
  );
}

describe('the interceptor in a real server', () => {
  let dir: string;
  let keysFile: string;
  let server: RunningServer;
  let client: Any;
  let health: Any;
  const logLines: string[] = [];
  const seenByHandlers: (string | undefined)[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-auth-'));
    keysFile = path.join(dir, 'api-keys.txt');
    fs.writeFileSync(keysFile, `${EMBED_KEY} embed web\n${TUNE_KEY} finetune tuner\n${ADMIN_KEY} admin ops\n`);
    const sink = new Writable({ write: (chunk, _enc, cb) => (logLines.push(String(chunk)), cb()) });
    server = await startTestServer({
      logger: pino({ level: 'debug' }, sink),
      apiKeysFile: keysFile,
      // Environment keys add to the file's.
      apiKeys: `sha256:${digestOf(HASHED_KEY).toString('hex')} embed from-env`,
      credentialsReloadSeconds: 0.1,
      // After the auth interceptor: records what handlers get.
      interceptors: [
        (_descriptor, next) =>
          new grpc.ServerInterceptingCall(next, {
            start: (go) =>
              go({
                onReceiveMetadata: (md, pass) => (
                  seenByHandlers.push(md.get('authorization')[0] as string | undefined),
                  pass(md)
                ),
              }),
          }),
      ],
    });
    client = embeddingClient(server.port).raw;
    health = new healthApi.grpc.health.v1.Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    health?.close();
    await server?.shutdown(1);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('no key, a wrong key or a malformed header: UNAUTHENTICATED; the handler never runs', async () => {
    const before = seenByHandlers.length;
    const cases: [grpc.Metadata, RegExp][] = [
      [metadataWith(), /missing API key/],
      [metadataWith(`Bearer ${EMBED_KEY}X`), /invalid API key/],
      [metadataWith(`Basic ${EMBED_KEY}`), /malformed/],
      [metadataWith(EMBED_KEY), /malformed/],
    ];
    for (const [md, details] of cases) {
      const r = await call(client, 'EmbedText', { texts: ['a cat'] }, md);
      expect([r.code, r.details]).toEqual([grpc.status.UNAUTHENTICATED, expect.stringMatching(details)]);
    }
    expect(seenByHandlers.length).toBe(before);
  });

  test('a key without the scope: PERMISSION_DENIED; embed and admin keys are served', async () => {
    const denied = await call(client, 'EmbedText', { texts: ['a cat'] }, metadataWith(`Bearer ${TUNE_KEY}`));
    expect([denied.code, denied.details]).toEqual([
      grpc.status.PERMISSION_DENIED,
      'API key "tuner" lacks the "embed" scope',
    ]);
    for (const key of [EMBED_KEY, ADMIN_KEY, HASHED_KEY]) {
      const ok = await call(client, 'EmbedText', { texts: ['a cat'] }, metadataWith(`bearer  ${key}`));
      expect(ok.code).toBe(grpc.status.OK);
      expect(ok.res!.embeddings).toHaveLength(1);
    }
    // Streams are checked the same way, before any message reaches the handler.
    const stream = client.EmbedStream(metadataWith(`Bearer ${TUNE_KEY}`));
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    stream.on('data', () => undefined);
    stream.write({ id: '1', text: 'a cat' });
    expect((await ended).code).toBe(grpc.status.PERMISSION_DENIED);
  });

  test('handlers never see the authorization header', async () => {
    await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${EMBED_KEY}`));
    expect(seenByHandlers.length).toBeGreaterThan(0);
    expect(seenByHandlers.every((v) => v === undefined)).toBe(true);
  });

  test('health stays open', async () => {
    const r = await call(health, 'Check', { service: '' }, metadataWith());
    expect([r.code, r.res?.status]).toEqual([grpc.status.OK, 'SERVING']);
  });

  test('refused calls are counted by the metrics interceptor with their code', async () => {
    const text = await server.metrics.registry.metrics();
    const count = (code: string) =>
      Number(
        new RegExp(
          `grpc_server_handled_total\\{[^}]*grpc_method="EmbedText"[^}]*grpc_code="${code}"[^}]*\\} (\\d+)`,
        ).exec(text)?.[1],
      );
    expect(count('Unauthenticated')).toBeGreaterThanOrEqual(4);
    expect(count('PermissionDenied')).toBeGreaterThanOrEqual(1);
  });

  test('the key file is reloaded on change; a broken file keeps the previous keys', async () => {
    const NEW_KEY = 'rotated-key-000000000000000000';
    fs.writeFileSync(keysFile, `${NEW_KEY} embed rotated\n`);
    const until = async (pred: () => Promise<boolean>) => {
      for (let i = 0; i < 100 && !(await pred()); i++) await new Promise((r) => setTimeout(r, 50));
    };
    await until(
      async () => (await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${NEW_KEY}`))).code === grpc.status.OK,
    );
    expect((await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${NEW_KEY}`))).code).toBe(grpc.status.OK);
    expect((await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${EMBED_KEY}`))).code).toBe(
      grpc.status.UNAUTHENTICATED,
    );
    // The environment's keys stay whatever the file does.
    expect((await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${HASHED_KEY}`))).code).toBe(grpc.status.OK);

    fs.writeFileSync(keysFile, `${NEW_KEY} embed,wrte broken\n`);
    await until(async () => logLines.some((l) => l.includes('API key file not reloaded')));
    expect(logLines.some((l) => l.includes('unknown scope \\"wrte\\"'))).toBe(true);
    expect((await call(client, 'GetModelInfo', {}, metadataWith(`Bearer ${NEW_KEY}`))).code).toBe(grpc.status.OK);
  });

  test('keys never appear in logs or metrics', async () => {
    const everything = logLines.join('') + (await server.metrics.registry.metrics());
    expect(logLines.some((l) => l.includes('call refused by API-key check'))).toBe(true);
    for (const key of [EMBED_KEY, TUNE_KEY, ADMIN_KEY, HASHED_KEY, 'rotated-key-000000000000000000']) {
      expect(everything).not.toContain(key);
      expect(everything).not.toContain(key.slice(0, 12));
    }
  });
});

describe('scopes across the services (fine-tuning on)', () => {
  test('finetune → FineTuneService only; admin → everything; embed → EmbeddingService only', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-auth-ft-'));
    const server = await startTestServer({
      dataDir: path.join(tmp, 'data'),
      apiKeys: `${EMBED_KEY} embed; ${TUNE_KEY} finetune; ${ADMIN_KEY} admin`,
    });
    // Untyped on purpose: the loop below calls one method of each service by name.
    const services: Record<'embed' | 'finetune' | 'admin', readonly [Any, string]> = {
      embed: [embeddingClient(server.port).raw, 'GetModelInfo'],
      finetune: [fineTuneClient(server.port).raw, 'ListFineTuneJobs'],
      admin: [modelClient(server.port).raw, 'ListModels'],
    };
    try {
      const outcome = async (key: string) => {
        const codes: Record<string, string> = {};
        for (const [name, [c, method]] of Object.entries(services))
          codes[name] = grpc.status[(await call(c, method, {}, metadataWith(`Bearer ${key}`))).code];
        return codes;
      };
      expect(await outcome(EMBED_KEY)).toEqual({
        embed: 'OK',
        finetune: 'PERMISSION_DENIED',
        admin: 'PERMISSION_DENIED',
      });
      expect(await outcome(TUNE_KEY)).toEqual({
        embed: 'PERMISSION_DENIED',
        finetune: 'OK',
        admin: 'PERMISSION_DENIED',
      });
      expect(await outcome(ADMIN_KEY)).toEqual({ embed: 'OK', finetune: 'OK', admin: 'OK' });
      expect(await outcome('not-a-key-0000000000000')).toEqual({
        embed: 'UNAUTHENTICATED',
        finetune: 'UNAUTHENTICATED',
        admin: 'UNAUTHENTICATED',
      });
      // Client streaming (an upload) is refused before any byte is stored; server streaming too.
      const ft = services.finetune[0];
      const upload = await new Promise<grpc.ServiceError | null>((resolve) => {
        const stream = ft.UploadDataset(metadataWith(`Bearer ${EMBED_KEY}`), (err: grpc.ServiceError | null) =>
          resolve(err),
        );
        stream.write({ header: { name: 'x', format: 'DATASET_FORMAT_PAIRS' } });
        for (let i = 0; i < 50; i++) stream.write({ pair: { image: Buffer.alloc(10_000, i), caption: 'c' } });
        stream.end();
      });
      expect(upload?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(
        fs.existsSync(path.join(tmp, 'data', 'datasets')) ? fs.readdirSync(path.join(tmp, 'data', 'datasets')) : [],
      ).toEqual([]);
      const watch = await new Promise<grpc.ServiceError>((resolve) => {
        const stream = ft.WatchFineTuneJob({ jobId: 'ftjob-x' }, metadataWith());
        stream.on('data', () => undefined);
        stream.on('error', resolve);
      });
      expect(watch.code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      for (const [c] of Object.values(services)) c.close();
      await server.shutdown(1);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('closing health and reflection', () => {
  test('with --auth-open-health false, health needs a key (any scope)', async () => {
    const server = await startTestServer({
      apiKeys: `${TUNE_KEY} finetune`,
      authOpenHealth: 'false',
      authOpenReflection: false,
    });
    const health = new healthApi.grpc.health.v1.Health(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    try {
      expect((await call(health, 'Check', { service: '' }, metadataWith())).code).toBe(grpc.status.UNAUTHENTICATED);
      expect((await call(health, 'Check', { service: '' }, metadataWith(`Bearer ${TUNE_KEY}`))).code).toBe(
        grpc.status.OK,
      );
    } finally {
      health.close();
      await server.shutdown(1);
    }
  });

  test('closing them without keys is a configuration error; so is an empty key list', async () => {
    await expect(
      startServer({ port: 0, metricsPort: 0, httpPort: 0, authOpenHealth: false, logger: pino({ level: 'silent' }) }),
    ).rejects.toThrow(/need API keys/);
    expect(() => new ApiKeySource({ envValue: '# nothing\n' })).toThrow(/list is empty/);
    expect(() => new ApiKeySource({ file: '/nonexistent/keys' })).toThrow(
      /cannot read --api-keys-file \/nonexistent\/keys: ENOENT/,
    );
  });
});

describe('clipserve serve', () => {
  test('refuses API keys on its command line, where other users could read them', async () => {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        [
          compiledModule('cli/main'),
          'serve',
          '--api-keys',
          `${EMBED_KEY} embed`,
          '--port',
          '0',
          '--metrics-port',
          '0',
          '--http-port',
          '0',
        ],
        (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
      child.stdin?.end();
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/--api-keys is not accepted on the command line.*CLIPSERVE_API_KEYS/);
    expect(result.stderr).not.toContain(EMBED_KEY);
  });
});
