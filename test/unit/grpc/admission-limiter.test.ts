/**
 * Per-caller admission on its own: the token bucket and in-flight cap of CallerLimiter (on a fake
 * clock), the bound on remembered callers, the rate-limited log and the holding of refusals, and
 * the interceptor on a real grpc-js server (refused messages are never decoded).
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CallerLimiter, type Admission } from '../../../server/src/grpc/admission-limiter';
import { createAdmissionInterceptor, modalityOfMethod } from '../../../server/src/grpc/admission-interceptor';
import { loadProtos } from '../../../server/src/grpc/proto';
import { RefusalHolds } from '../../../server/src/grpc/refusal-holds';
import { RefusalLog } from '../../../server/src/grpc/refusal-log';

const admitted = (a: Admission): (() => void) => {
  if (!a.admitted) throw new Error(`refused: ${a.details}`);
  return a.release;
};

describe('CallerLimiter', () => {
  test('a caller may start its burst at once, then calls at its rate; other callers keep theirs', () => {
    const limiter = new CallerLimiter({ ratePerSecond: 10, burst: 3, maxConcurrent: 0, maxCallers: 100 });
    for (let i = 0; i < 3; i++) admitted(limiter.admit('a', 0))();
    const refused = limiter.admit('a', 0);
    expect(refused).toEqual({
      admitted: false,
      limit: 'rate',
      details: expect.stringMatching(/rate of 10 calls per second \(burst 3\); retry in 100 ms/),
      retryMs: 100,
    });
    // Another caller is untouched by a's flood.
    admitted(limiter.admit('b', 0))();
    // 100 ms later one token has come back, and only one.
    admitted(limiter.admit('a', 100))();
    expect(limiter.admit('a', 100).admitted).toBe(false);
    // After a long idle spell the bucket is full again, never fuller than the burst.
    for (let i = 0; i < 3; i++) admitted(limiter.admit('a', 60_000))();
    expect(limiter.admit('a', 60_000).admitted).toBe(false);
  });

  test('a refused call takes no token: a caller retrying in a loop is admitted at its rate', () => {
    const limiter = new CallerLimiter({ ratePerSecond: 100, burst: 1, maxConcurrent: 0, maxCallers: 100 });
    let ok = 0;
    // One attempt every millisecond for a second: 100 tokens come back, plus the first.
    for (let t = 0; t < 1000; t++) if (limiter.admit('a', t).admitted) ok++;
    expect(ok).toBeGreaterThanOrEqual(99);
    expect(ok).toBeLessThanOrEqual(101);
  });

  test('calls in flight are capped per caller and released once, however often release is called', () => {
    const limiter = new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 2, maxCallers: 100 });
    const r1 = admitted(limiter.admit('a', 0));
    admitted(limiter.admit('a', 0));
    expect(limiter.admit('a', 0)).toMatchObject({
      admitted: false,
      limit: 'concurrency',
      details: expect.stringMatching(/already has 2 calls in flight.*--caller-concurrency 2/),
    });
    admitted(limiter.admit('b', 0));
    r1();
    r1(); // a second release (status after cancel) must not free a slot it does not hold
    admitted(limiter.admit('a', 0));
    expect(limiter.admit('a', 0).admitted).toBe(false);
  });

  test('remembers at most maxCallers idle callers, never forgetting one with calls in flight', () => {
    const limiter = new CallerLimiter({ ratePerSecond: 1, burst: 1, maxConcurrent: 1, maxCallers: 3 });
    const held = admitted(limiter.admit('busy', 0));
    for (let i = 0; i < 1000; i++) admitted(limiter.admit(`peer:${i}`, 0))();
    expect(limiter.size).toBe(3);
    // 'busy' was the least recently seen but has a call in flight: still known, still capped.
    expect(limiter.admit('busy', 0)).toMatchObject({ admitted: false, limit: 'concurrency' });
    held();
  });

  test('a caller whose calls keep being invalid is refused until its invalid-call budget refills; valid calls spend nothing', () => {
    const limiter = new CallerLimiter({
      ratePerSecond: 0,
      burst: 1,
      maxConcurrent: 0,
      maxCallers: 100,
      invalidPerSecond: 10,
      invalidBurst: 2,
    });
    expect(limiter.unlimited).toBe(false);
    // Valid calls never touch the budget.
    for (let i = 0; i < 50; i++) admitted(limiter.admit('a', 0))();
    // Two invalid calls spend the burst: the next call of a is refused, b is untouched.
    for (let i = 0; i < 2; i++) {
      admitted(limiter.admit('a', 0))();
      limiter.chargeInvalid('a', 0);
    }
    expect(limiter.admit('a', 0)).toEqual({
      admitted: false,
      limit: 'invalid',
      details: expect.stringMatching(/invalid requests .*10 per second, burst 2.*retry in 100 ms/),
      retryMs: 100,
    });
    admitted(limiter.admit('b', 0))();
    // 100 ms later one token is back: one call is admitted; if it is invalid again, a waits again.
    admitted(limiter.admit('a', 100))();
    limiter.chargeInvalid('a', 100);
    expect(limiter.admit('a', 100).admitted).toBe(false);
    // A charge for a caller never seen is ignored (nothing to remember).
    limiter.chargeInvalid('unknown', 100);
    expect(limiter.size).toBe(2);
  });

  test('unlimited only when both limits are off; nonsense limits are refused', () => {
    expect(new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 0, maxCallers: 1 }).unlimited).toBe(true);
    expect(new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 1, maxCallers: 1 }).unlimited).toBe(false);
    expect(() => new CallerLimiter({ ratePerSecond: -1, burst: 1, maxConcurrent: 0, maxCallers: 1 })).toThrow(
      RangeError,
    );
    expect(() => new CallerLimiter({ ratePerSecond: 1, burst: 0, maxConcurrent: 0, maxCallers: 1 })).toThrow(
      RangeError,
    );
    expect(() => new CallerLimiter({ ratePerSecond: 1, burst: 1, maxConcurrent: 1.5, maxCallers: 1 })).toThrow(
      RangeError,
    );
  });
});

describe('RefusalHolds', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  test('sends after the caller could retry (at most maxHoldMs), at once beyond maxHeld, and frees a cancelled slot', () => {
    const holds = new RefusalHolds(2, 1000);
    const sent: string[] = [];
    holds.hold(50, () => sent.push('a'));
    const cancelB = holds.hold(5000, () => sent.push('b'));
    holds.hold(50, () => sent.push('c')); // two held: sent at once
    expect([sent, holds.size]).toEqual([['c'], 2]);
    jest.advanceTimersByTime(50);
    expect([sent, holds.size]).toEqual([['c', 'a'], 1]);
    cancelB(); // the client gave up: nothing is sent, the slot is free
    cancelB();
    expect(holds.size).toBe(0);
    holds.hold(5000, () => sent.push('d'));
    jest.advanceTimersByTime(999);
    expect(sent).toEqual(['c', 'a']);
    jest.advanceTimersByTime(1); // clamped to maxHoldMs
    expect([sent, holds.size]).toEqual([['c', 'a', 'd'], 0]);
    holds.hold(0, () => sent.push('e'));
    expect(sent).toEqual(['c', 'a', 'd', 'e']);
  });
});

describe('RefusalLog', () => {
  test('one line per caller and reason per interval, carrying the count of the refusals it skipped', () => {
    const lines: Record<string, unknown>[] = [];
    const logger = { info: (fields: Record<string, unknown>) => lines.push(fields) } as unknown as Logger;
    const log = new RefusalLog(logger, 1000);
    for (let t = 0; t < 500; t++) log.refused('key:attacker', 'caller_limit', t, { method: '/m' });
    log.refused('key:other', 'caller_limit', 10, {});
    log.refused('key:attacker', 'key_share', 20, {});
    log.refused('key:attacker', 'caller_limit', 1500, {});
    expect(lines.map((l) => [l.caller, l.reason, l.suppressedSinceLastLine])).toEqual([
      ['key:attacker', 'caller_limit', 0],
      ['key:other', 'caller_limit', 0],
      ['key:attacker', 'key_share', 0],
      ['key:attacker', 'caller_limit', 499],
    ]);
  });
});

test('only EmbedText and EmbedImage map to one queue', () => {
  expect(
    [
      '/clipserve.v1.EmbeddingService/EmbedText',
      '/clipserve.v1.EmbeddingService/EmbedImage',
      '/clipserve.v1.EmbeddingService/EmbedStream',
    ].map(modalityOfMethod),
  ).toEqual(['text', 'image', undefined]);
});

describe('the admission interceptor on a grpc-js server', () => {
  // A real grpc-js server over loopback with the interceptor alone: the handler and the request
  // deserializer count what reaches them, so "refused before decoding" is observed, not assumed.
  let server: grpc.Server;
  let client: grpc.Client;
  let decoded = 0;
  let overShare = false;
  const counted: string[] = [];
  const holds = new RefusalHolds(16, 1000);
  beforeAll(async () => {
    const { embeddingService } = loadProtos();
    const EmbedText = embeddingService.EmbedText;
    const counting = {
      ...embeddingService,
      EmbedText: { ...EmbedText, requestDeserialize: (b: Buffer) => (decoded++, EmbedText.requestDeserialize(b)) },
    };
    server = new grpc.Server({
      interceptors: [
        createAdmissionInterceptor({
          limiter: new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 1, maxCallers: 10 }),
          applies: (path) => path.endsWith('/EmbedText'),
          overShare: () => overShare,
          count: (modality, reason) => counted.push(`${modality}:${reason}`),
          holds,
        }),
      ],
      'grpc.max_receive_message_length': 64 << 20,
    });
    // The handler answers after a while, so a second call of the same caller finds the first in flight.
    server.addService(counting as grpc.ServiceDefinition, {
      EmbedText: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
        setTimeout(() => cb(null, { embeddings: [] }), 300),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const Client = grpc.makeGenericClientConstructor(counting as grpc.ServiceDefinition, 'EmbeddingService');
    client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': 64 << 20,
    });
  });
  afterAll(() => {
    client?.close();
    server?.forceShutdown();
  });

  const embed = (texts: string[]): Promise<{ code: grpc.status; details: string; ms: number }> => {
    const t0 = performance.now();
    return new Promise((resolve) =>
      (client as unknown as Record<string, (...a: unknown[]) => void>).EmbedText(
        { texts },
        (err: grpc.ServiceError | null) =>
          resolve({ code: err ? err.code : grpc.status.OK, details: err?.details ?? '', ms: performance.now() - t0 }),
      ),
    );
  };

  test('a caller over its share or its calls in flight is refused from its headers: its 6 MiB messages are never decoded', async () => {
    const big = Array.from({ length: 64 }, (_, i) => String.fromCharCode(97 + (i % 26)).repeat(98_304)); // 6 MiB
    overShare = true;
    const refused = await Promise.all(Array.from({ length: 5 }, () => embed(big)));
    expect(refused.map((r) => r.code)).toEqual(Array(5).fill(grpc.status.RESOURCE_EXHAUSTED));
    expect(refused[0].details).toMatch(/holds its share of the queue while other callers wait/);
    expect(decoded).toBe(0);
    expect(counted).toEqual(Array(5).fill('text:key_share'));
    // Held about 100 ms before the answer, never for seconds.
    for (const r of refused) expect(r.ms).toBeLessThan(5000);
    overShare = false;
    counted.length = 0;
    // One call in flight (the handler holds it 300 ms): the second is refused undecoded, the first served.
    const [first, second] = await Promise.all([
      embed(['a']),
      new Promise((r) => setTimeout(r, 100)).then(() => embed(big)),
    ]);
    expect([first.code, second.code]).toEqual([grpc.status.OK, grpc.status.RESOURCE_EXHAUSTED]);
    expect(second.details).toMatch(/already has 1 calls in flight/);
    expect(decoded).toBe(1);
    expect(counted).toEqual(['text:caller_limit']);
    // Once the first has finished its slot is free again.
    expect((await embed(['b'])).code).toBe(grpc.status.OK);
    expect(holds.size).toBe(0);
  }, 60_000);
});
