/**
 * Holds a refusal back until the refused caller could be admitted (at most `maxHoldMs`), instead of
 * answering at once. A client that retries as soon as it is refused — a closed loop, or a flood —
 * would otherwise spin on refusals as fast as the server can send them (thousands a second, each a
 * stream opened and a status sent on the event loop): held, it retries at about the rate it is
 * allowed. A held call costs a timer and its stream (its message is never read). At most
 * `maxHeld` refusals are held at once, server-wide; beyond that they are sent at once, as before,
 * so holding can never pile up memory.
 */
export class RefusalHolds {
  private held = 0;

  constructor(
    private readonly maxHeld: number,
    private readonly maxHoldMs: number,
  ) {}

  /** Refusals held now. */
  get size(): number {
    return this.held;
  }

  /**
   * Runs `send` after `ms` (clamped to maxHoldMs), or at once when too many are held. Returns a
   * cancel function for a call that ends meanwhile (the client gave up): it frees the slot.
   */
  hold(ms: number, send: () => void): () => void {
    const delay = Math.min(Math.max(0, ms), this.maxHoldMs);
    if (delay === 0 || this.held >= this.maxHeld) {
      send();
      return () => undefined;
    }
    this.held++;
    let done = false;
    const finish = () => {
      if (done) return false;
      done = true;
      this.held--;
      clearTimeout(timer);
      return true;
    };
    const timer = setTimeout(() => {
      if (finish()) send();
    }, delay);
    timer.unref();
    return () => void finish();
  }
}
