/**
 * Per-caller admission before any work: a token bucket (calls per second, with a burst), a cap on
 * calls in flight, and a second bucket of invalid calls (calls the server answered
 * INVALID_ARGUMENT: a caller that keeps sending what it is told is wrong is refused until its
 * budget refills), per caller key (API key name, or peer address without keys). It is read from
 * a call's metadata, before its message is decoded, so a flooding caller costs the server a
 * trailers-only status per call and nothing more. Pure bookkeeping: no gRPC, no timers.
 */

export interface CallerLimits {
  /** Calls each caller may start per second on average (0 = no rate limit). */
  ratePerSecond: number;
  /** Calls a caller may start at once after being idle (the bucket's size); at least 1. */
  burst: number;
  /** Calls one caller may have in flight at once (0 = no limit). */
  maxConcurrent: number;
  /** Invalid calls (answered INVALID_ARGUMENT) each caller may make per second on average (0 = no limit). */
  invalidPerSecond?: number;
  /** Invalid calls a caller may make at once before the invalid-call rate applies; at least 1. */
  invalidBurst?: number;
  /**
   * Callers remembered at most. Beyond it the least recently seen caller with nothing in flight is
   * forgotten (its bucket is refilled anyway after burst / rate seconds idle); callers with calls in
   * flight are never forgotten, so the map holds at most this many plus the calls in flight.
   */
  maxCallers: number;
}

export type Admission =
  | { admitted: true; /** Ends the call's hold on the concurrency cap; idempotent. */ release: () => void }
  | {
      admitted: false;
      limit: 'rate' | 'concurrency' | 'invalid';
      details: string;
      /** When a retry could be admitted at the earliest (a guess for 'concurrency'). */ retryMs: number;
    };

/** A caller at its in-flight cap learns nothing about when one of its calls ends: a short guess. */
const CONCURRENCY_RETRY_MS = 100;
/** Refills add fractions of a token: ten additions of 0.1 must make a whole one. */
const TOKEN_EPSILON = 1e-9;

interface CallerState {
  tokens: number;
  refilledAt: number;
  inFlight: number;
  /** The invalid-call bucket: spent by charge(), refilled at invalidPerSecond. */
  invalidTokens: number;
  invalidRefilledAt: number;
}

/** A token bucket's level at `nowMs`, refilled from `at` at `rate` per second up to `size`. */
function refilled(tokens: number, at: number, nowMs: number, rate: number, size: number): number {
  return Math.min(size, tokens + (Math.max(0, nowMs - at) * rate) / 1000);
}

export class CallerLimiter {
  /** Insertion order is recency: a touched caller is moved to the end. */
  private readonly callers = new Map<string, CallerState>();

  constructor(private readonly limits: CallerLimits) {
    if (!(limits.ratePerSecond >= 0 && Number.isFinite(limits.ratePerSecond)))
      throw new RangeError(`ratePerSecond must be a finite number >= 0, got ${limits.ratePerSecond}`);
    if (!(limits.burst >= 1)) throw new RangeError(`burst must be >= 1, got ${limits.burst}`);
    if (!(Number.isInteger(limits.maxConcurrent) && limits.maxConcurrent >= 0))
      throw new RangeError(`maxConcurrent must be an integer >= 0, got ${limits.maxConcurrent}`);
    const invalidRate = limits.invalidPerSecond ?? 0;
    if (!(invalidRate >= 0 && Number.isFinite(invalidRate)))
      throw new RangeError(`invalidPerSecond must be a finite number >= 0, got ${invalidRate}`);
    if (!((limits.invalidBurst ?? 1) >= 1))
      throw new RangeError(`invalidBurst must be >= 1, got ${limits.invalidBurst}`);
    if (!(Number.isInteger(limits.maxCallers) && limits.maxCallers >= 1))
      throw new RangeError(`maxCallers must be an integer >= 1, got ${limits.maxCallers}`);
  }

  /** True when no limit is on (rate, in flight, invalid calls): the interceptor then skips the bookkeeping. */
  get unlimited(): boolean {
    return this.limits.ratePerSecond === 0 && this.limits.maxConcurrent === 0 && !(this.limits.invalidPerSecond ?? 0);
  }

  /** Callers remembered now (for tests and the map bound). */
  get size(): number {
    return this.callers.size;
  }

  /** Admits one call of `key` at `nowMs` (a monotonic clock), or says which limit refused it. */
  admit(key: string, nowMs: number): Admission {
    const { ratePerSecond, burst, maxConcurrent } = this.limits;
    let state = this.callers.get(key);
    if (state) {
      this.callers.delete(key);
    } else {
      state = this.fresh(nowMs);
    }
    this.callers.set(key, state);
    if (ratePerSecond > 0) {
      state.tokens = refilled(state.tokens, state.refilledAt, nowMs, ratePerSecond, burst);
      state.refilledAt = nowMs;
    }
    const invalidRate = this.limits.invalidPerSecond ?? 0;
    if (invalidRate > 0) {
      state.invalidTokens = refilled(
        state.invalidTokens,
        state.invalidRefilledAt,
        nowMs,
        invalidRate,
        this.invalidBurst,
      );
      state.invalidRefilledAt = nowMs;
    }
    let refusal: Admission | undefined;
    if (invalidRate > 0 && state.invalidTokens < 1 - TOKEN_EPSILON) {
      const waitMs = Math.ceil(((1 - state.invalidTokens) * 1000) / invalidRate);
      refusal = {
        admitted: false,
        limit: 'invalid',
        details: `this caller sent more invalid requests than allowed (${invalidRate} per second, burst ${this.invalidBurst}, --caller-invalid-rate); fix the requests, and retry in ${waitMs} ms`,
        retryMs: waitMs,
      };
    } else if (maxConcurrent > 0 && state.inFlight >= maxConcurrent) {
      refusal = {
        admitted: false,
        limit: 'concurrency',
        details: `this caller already has ${state.inFlight} calls in flight, the most allowed (--caller-concurrency ${maxConcurrent}); retry when one finishes`,
        retryMs: CONCURRENCY_RETRY_MS,
      };
    } else if (ratePerSecond > 0 && state.tokens < 1 - TOKEN_EPSILON) {
      const waitMs = Math.ceil(((1 - state.tokens) * 1000) / ratePerSecond);
      refusal = {
        admitted: false,
        limit: 'rate',
        details: `this caller exceeds its rate of ${ratePerSecond} calls per second (burst ${burst}); retry in ${waitMs} ms`,
        retryMs: waitMs,
      };
    }
    if (refusal) {
      this.evict();
      return refusal;
    }
    if (ratePerSecond > 0) state.tokens = Math.max(0, state.tokens - 1);
    state.inFlight++;
    this.evict();
    const held = state;
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        held.inFlight--;
      },
    };
  }

  /** Spends one invalid-call token of `key` (its call was answered INVALID_ARGUMENT). */
  chargeInvalid(key: string, nowMs: number): void {
    const rate = this.limits.invalidPerSecond ?? 0;
    const state = this.callers.get(key);
    if (rate === 0 || !state) return;
    state.invalidTokens = Math.max(
      0,
      refilled(state.invalidTokens, state.invalidRefilledAt, nowMs, rate, this.invalidBurst) - 1,
    );
    state.invalidRefilledAt = nowMs;
  }

  private get invalidBurst(): number {
    return this.limits.invalidBurst ?? 1;
  }

  private fresh(nowMs: number): CallerState {
    return {
      tokens: this.limits.burst,
      refilledAt: nowMs,
      inFlight: 0,
      invalidTokens: this.invalidBurst,
      invalidRefilledAt: nowMs,
    };
  }

  /** Forgets the least recently seen idle callers beyond maxCallers. */
  private evict(): void {
    if (this.callers.size <= this.limits.maxCallers) return;
    for (const [key, state] of this.callers) {
      if (this.callers.size <= this.limits.maxCallers) return;
      if (state.inFlight === 0) this.callers.delete(key);
    }
  }
}
