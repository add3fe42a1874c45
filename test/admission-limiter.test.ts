/**
 * Per-caller admission on its own: the token bucket and in-flight cap of CallerLimiter (on a fake
 * clock), the bound on remembered callers, and the rate-limited log of refusals.
 */
import type { Logger } from 'pino';
import { CallerLimiter, type Admission } from '../server/src/grpc/admission-limiter';
import { modalityOfMethod } from '../server/src/grpc/admission-interceptor';
import { RefusalHolds } from '../server/src/grpc/refusal-holds';
import { RefusalLog } from '../server/src/grpc/refusal-log';

const admitted = (a: Admission): (() => void) => {
  if (!a.admitted) throw new Error(`refused: ${a.details}`);
  return a.release;
};

describe('CallerLimiter', () => {
  test('a caller may start its burst at once, then calls at its rate; other callers keep theirs', () => {
    const limiter = new CallerLimiter({ ratePerSecond: 10, burst: 3, maxConcurrent: 0, maxCallers: 100 });
    for (let i = 0; i < 3; i++) admitted(limiter.admit('a', 0))();
    const refused = limiter.admit('a', 0);
    expect(refused).toEqual({ admitted: false, limit: 'rate', details: expect.stringMatching(/rate of 10 calls per second \(burst 3\); retry in 100 ms/), retryMs: 100 });
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
    expect(limiter.admit('a', 0)).toMatchObject({ admitted: false, limit: 'concurrency', details: expect.stringMatching(/already has 2 calls in flight.*--caller-concurrency 2/) });
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

  test('unlimited only when both limits are off; nonsense limits are refused', () => {
    expect(new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 0, maxCallers: 1 }).unlimited).toBe(true);
    expect(new CallerLimiter({ ratePerSecond: 0, burst: 1, maxConcurrent: 1, maxCallers: 1 }).unlimited).toBe(false);
    expect(() => new CallerLimiter({ ratePerSecond: -1, burst: 1, maxConcurrent: 0, maxCallers: 1 })).toThrow(RangeError);
    expect(() => new CallerLimiter({ ratePerSecond: 1, burst: 0, maxConcurrent: 0, maxCallers: 1 })).toThrow(RangeError);
    expect(() => new CallerLimiter({ ratePerSecond: 1, burst: 1, maxConcurrent: 1.5, maxCallers: 1 })).toThrow(RangeError);
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
  expect(['/clipserve.v1.EmbeddingService/EmbedText', '/clipserve.v1.EmbeddingService/EmbedImage', '/clipserve.v1.EmbeddingService/EmbedStream'].map(modalityOfMethod)).toEqual(['text', 'image', undefined]);
});
