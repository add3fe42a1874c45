/**
 * @clipserve/sdk transport behaviour against real servers: retries with backoff through the gRPC
 * service config (a flaky proxy in front of the server refuses the first attempts), API-key
 * metadata, deadlines and aborts on slow calls, TLS and mutual TLS with a CA made by openssl, and
 * round_robin load balancing across two server processes (each behind a counting pass-through).
 */
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import {
  loadSdk,
  makeTlsFixtures,
  startClipServer,
  startClipServers,
  startFlakyProxy,
  type ClipServerProcess,
  type TlsFixtures,
  rejection,
} from '../../helpers/sdk';

const sdk = loadSdk();
const { ClipClient: Client, Status } = sdk;

let plain: ClipServerProcess;
let second: ClipServerProcess;
let mtls: ClipServerProcess;
let tls: ClipServerProcess;
let certs: TlsFixtures;

beforeAll(async () => {
  certs = makeTlsFixtures();
  // The first start may build the demo bundle; the others then find it in the shared cache.
  plain = await startClipServer();
  [second, tls, mtls] = await startClipServers([
    {},
    { tls: { cert: certs.serverCert, key: certs.serverKey } },
    { tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.caCert } },
  ]);
});

afterAll(async () => {
  await Promise.all([plain, second, tls, mtls].map((s) => s?.stop()));
  if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
});

describe('retries (service config retryPolicy)', () => {
  test.each([
    ['UNAVAILABLE', grpc.status.UNAVAILABLE],
    ['RESOURCE_EXHAUSTED', grpc.status.RESOURCE_EXHAUSTED],
  ])('%s twice, then OK: the call succeeds on the third attempt', async (_name, code) => {
    const proxy = await startFlakyProxy(plain.address, { failFirst: 2, code });
    const client = new Client({ address: proxy.address, retry: { initialBackoffMs: 20, maxBackoffMs: 100 } });
    try {
      const direct = new Client({ address: plain.address });
      const [expected] = await direct.embedTexts(['retry me'], { maxItemsPerRequest: 8 });
      direct.close();
      const [v] = await client.embedTexts(['retry me'], { maxItemsPerRequest: 8 });
      expect(Array.from(v)).toEqual(Array.from(expected));
      expect(proxy.attempts.get('EmbedText')).toBe(3);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  test('gives up after maxAttempts with the last status; backoff spaces the attempts', async () => {
    const proxy = await startFlakyProxy(plain.address, { failFirst: 100, code: grpc.status.UNAVAILABLE });
    const client = new Client({
      address: proxy.address,
      retry: { maxAttempts: 4, initialBackoffMs: 100, maxBackoffMs: 1000, backoffMultiplier: 2 },
    });
    try {
      const t0 = Date.now();
      const err = await rejection(client.modelInfo());
      expect(err.code).toBe(Status.UNAVAILABLE);
      expect(err.retryable).toBe(true);
      expect(proxy.attempts.get('GetModelInfo')).toBe(4);
      // backoffs ≈ 100, 200, 400 ms, each with ±20% jitter
      expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    } finally {
      client.close();
      await proxy.close();
    }
  });

  test('other codes are not retried, nor anything with retry: false', async () => {
    const proxy = await startFlakyProxy(plain.address, { failFirst: 1, code: grpc.status.INTERNAL });
    const client = new Client({ address: proxy.address, retry: { initialBackoffMs: 20 } });
    const noRetry = new Client({ address: proxy.address, retry: false });
    try {
      expect((await rejection(client.rank({ text: 'q' }, { texts: ['a'] }))).code).toBe(Status.INTERNAL);
      expect(proxy.attempts.get('Rank')).toBe(1);
      const proxy2 = await startFlakyProxy(plain.address, { failFirst: 1, code: grpc.status.UNAVAILABLE });
      const noRetry2 = new Client({ address: proxy2.address, retry: false });
      try {
        expect((await rejection(noRetry2.modelInfo())).code).toBe(Status.UNAVAILABLE);
        expect(proxy2.attempts.get('GetModelInfo')).toBe(1);
      } finally {
        noRetry2.close();
        await proxy2.close();
      }
    } finally {
      client.close();
      noRetry.close();
      await proxy.close();
    }
  });

  test('the API key travels as authorization: Bearer on every attempt, with custom metadata', async () => {
    const proxy = await startFlakyProxy(plain.address, { failFirst: 1, code: grpc.status.UNAVAILABLE });
    const client = new Client({
      address: proxy.address,
      apiKey: 'sk-test-123',
      metadata: { 'x-tenant': 'acme' },
      retry: { initialBackoffMs: 20 },
    });
    try {
      await client.embedTexts(['with key'], { maxItemsPerRequest: 4 });
      expect(proxy.seenMetadata.length).toBeGreaterThanOrEqual(2);
      for (const md of proxy.seenMetadata) {
        expect(md.get('authorization')).toEqual(['Bearer sk-test-123']);
        expect(md.get('x-tenant')).toEqual(['acme']);
      }
      expect(() => new Client({ address: proxy.address, apiKey: 'bad\nkey' })).toThrow(/apiKey/);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});

describe('deadlines and aborts on a slow server', () => {
  test('timeoutMs cuts a slow call with DEADLINE_EXCEEDED; a signal cancels it with CANCELLED', async () => {
    const proxy = await startFlakyProxy(plain.address, { failFirst: 0, code: grpc.status.OK, delayMs: 3000 });
    const client = new Client({ address: proxy.address });
    try {
      let t0 = Date.now();
      const late = await rejection(client.similarity({ images: [], texts: ['slow'] }, { timeoutMs: 300 }));
      expect(late.code).toBe(Status.DEADLINE_EXCEEDED);
      expect(Date.now() - t0).toBeLessThan(2000);
      const ac = new AbortController();
      setTimeout(() => ac.abort(new Error('enough')), 200);
      t0 = Date.now();
      const aborted = await rejection(client.rank({ text: 'q' }, { texts: ['a'] }, { signal: ac.signal }));
      expect(aborted.code).toBe(Status.CANCELLED);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      client.close();
      await proxy.close();
    }
  });
});

describe('TLS', () => {
  test('server TLS: trusted with the test CA; refused with another CA or without TLS', async () => {
    const ok = new Client({ address: `localhost:${tls.port}`, tls: { ca: fs.readFileSync(certs.caCert) } });
    const wrongCa = new Client({
      address: `localhost:${tls.port}`,
      tls: { ca: fs.readFileSync(certs.otherCaCert) },
      retry: false,
    });
    const plaintext = new Client({ address: `localhost:${tls.port}`, retry: false });
    try {
      expect(await ok.health()).toBe('SERVING');
      expect((await ok.embedTexts(['over tls'])).length).toBe(1);
      expect((await rejection(wrongCa.modelInfo({ timeoutMs: 5000 }))).code).toBe(Status.UNAVAILABLE);
      expect([Status.UNAVAILABLE, Status.INTERNAL]).toContain(
        (await rejection(plaintext.modelInfo({ timeoutMs: 5000 }))).code,
      );
    } finally {
      ok.close();
      wrongCa.close();
      plaintext.close();
    }
  });

  test('mutual TLS: a client certificate from the CA is required; serverName overrides the checked name', async () => {
    const ca = fs.readFileSync(certs.caCert, 'utf8');
    const withCert = new Client({
      address: `127.0.0.1:${mtls.port}`,
      tls: {
        ca,
        cert: fs.readFileSync(certs.clientCert, 'utf8'),
        key: fs.readFileSync(certs.clientKey, 'utf8'),
        serverName: 'localhost',
      },
    });
    const withoutCert = new Client({ address: `localhost:${mtls.port}`, tls: { ca }, retry: false });
    try {
      expect((await withCert.embedTexts(['mutual'])).length).toBe(1);
      expect((await rejection(withoutCert.modelInfo({ timeoutMs: 5000 }))).code).toBe(Status.UNAVAILABLE);
      expect(() => new Client({ address: 'localhost:1', tls: { ca, cert: 'only-cert' } })).toThrow(/cert and tls.key/);
    } finally {
      withCert.close();
      withoutCert.close();
    }
  });
});

describe('load balancing', () => {
  test('round_robin spreads calls over two server processes', async () => {
    // A pass-through proxy in front of each process counts the calls that reach it.
    const [toFirst, toSecond] = await Promise.all(
      [plain, second].map((s) => startFlakyProxy(s.address, { failFirst: 0, code: grpc.status.OK })),
    );
    const client = new Client({ address: `ipv4:${toFirst.address},${toSecond.address}` });
    try {
      await client.waitForReady({ timeoutMs: 10_000 });
      for (let i = 0; i < 20; i++) await client.embedTexts([`balanced ${i}`], { maxItemsPerRequest: 4 });
      const served = [toFirst, toSecond].map((p) => p.attempts.get('EmbedText') ?? 0);
      expect(served[0] + served[1]).toBe(20);
      expect(served[0]).toBeGreaterThanOrEqual(5);
      expect(served[1]).toBeGreaterThanOrEqual(5);
      // pick_first, by contrast, sends everything to one backend
      const sticky = new Client({
        address: `ipv4:${toFirst.address},${toSecond.address}`,
        loadBalancing: 'pick_first',
      });
      try {
        for (let i = 0; i < 6; i++) await sticky.embedTexts([`sticky ${i}`], { maxItemsPerRequest: 4 });
      } finally {
        sticky.close();
      }
      const delta = [toFirst, toSecond].map((p, i) => (p.attempts.get('EmbedText') ?? 0) - served[i]).sort();
      expect(delta).toEqual([0, 6]);
    } finally {
      client.close();
      await Promise.all([toFirst.close(), toSecond.close()]);
    }
  });

  test('waitForReady: resolves when connected, DEADLINE_EXCEEDED when nothing listens, CANCELLED on abort', async () => {
    const up = new Client({ address: plain.address });
    const down = new Client({ address: '127.0.0.1:1' });
    try {
      await up.waitForReady({ timeoutMs: 10_000 });
      expect((await rejection(down.waitForReady({ timeoutMs: 300 }))).code).toBe(Status.DEADLINE_EXCEEDED);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 100);
      expect((await rejection(down.waitForReady({ timeoutMs: 10_000, signal: ac.signal }))).code).toBe(
        Status.CANCELLED,
      );
    } finally {
      up.close();
      down.close();
    }
  });

  test('dns:/// targets resolve through DNS (localhost here)', async () => {
    const client = new Client({ address: `dns:///localhost:${plain.port}` });
    try {
      expect(await client.health({ timeoutMs: 10_000 })).toBe('SERVING');
    } finally {
      client.close();
    }
  });
});
