/**
 * Per-caller admission before any work: a token bucket (calls per second, with a burst) and a cap
 * on calls in flight, per caller key (API key name, or peer address without keys). It is read from
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
      limit: 'rate' | 'concurrency';
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
    if (!(Number.isInteger(limits.maxCallers) && limits.maxCallers >= 1))
      throw new RangeError(`maxCallers must be an integer >= 1, got ${limits.maxCallers}`);
  }

  /** True when neither limit is on: the interceptor then skips the bookkeeping. */
  get unlimited(): boolean {
    return this.limits.ratePerSecond === 0 && this.limits.maxConcurrent === 0;
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
      state = { tokens: burst, refilledAt: nowMs, inFlight: 0 };
    }
    this.callers.set(key, state);
    if (ratePerSecond > 0) {
      state.tokens = Math.min(burst, state.tokens + (Math.max(0, nowMs - state.refilledAt) * ratePerSecond) / 1000);
      state.refilledAt = nowMs;
    }
    let refusal: Admission | undefined;
    if (maxConcurrent > 0 && state.inFlight >= maxConcurrent) {
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

  /** Forgets the least recently seen idle callers beyond maxCallers. */
  private evict(): void {
    if (this.callers.size <= this.limits.maxCallers) return;
    for (const [key, state] of this.callers) {
      if (this.callers.size <= this.limits.maxCallers) return;
      if (state.inFlight === 0) this.callers.delete(key);
    }
  }
}
