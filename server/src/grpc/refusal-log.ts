/**
 * Logs refused calls without paying a log line per refusal: a flood of refused calls (hundreds a
 * second from one caller) would otherwise spend the event loop on formatting and writing lines. The
 * first refusal of a caller and reason is logged at once; later ones within the interval are only
 * counted, and the count is logged with the next refusal after the interval ends.
 */
import type { Logger } from 'pino';

interface Window {
  startedAt: number;
  suppressed: number;
}

export class RefusalLog {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
    /** Windows remembered at most; the oldest are forgotten first (their counts are then lost, never their first line). */
    private readonly maxWindows = 10_000,
  ) {}

  /** Records one refusal; logs it when it opens a new interval for (caller, reason). */
  refused(caller: string, reason: string, nowMs: number, fields: Record<string, unknown>): void {
    const id = `${reason}\u0000${caller}`;
    const w = this.windows.get(id);
    if (w && nowMs - w.startedAt < this.intervalMs) {
      w.suppressed++;
      return;
    }
    const suppressed = w?.suppressed ?? 0;
    this.windows.delete(id);
    this.windows.set(id, { startedAt: nowMs, suppressed: 0 });
    if (this.windows.size > this.maxWindows) this.windows.delete(this.windows.keys().next().value as string);
    this.logger.info(
      { ...fields, reason, caller, suppressedSinceLastLine: suppressed, intervalMs: this.intervalMs },
      'call refused by per-caller admission',
    );
  }
}
