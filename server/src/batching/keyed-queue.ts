/**
 * Per-caller fair queue: one FIFO per key (an opaque caller identity: an API key's name, a peer
 * address), keys served in turn (round robin). A caller that queues 500 items waits behind its own
 * items, not in front of everyone else's: another caller's one item is taken after at most one
 * item of each other caller. With uniform item costs (a tokenized text row, a 224 px image tensor)
 * round robin by item is deficit round robin by cost.
 *
 * Entries are never removed from the middle: callers mark dropped items and skip them on shift.
 */
import { Fifo } from './fifo';

export class KeyedQueue<T> {
  private readonly byKey = new Map<string, Fifo<T>>();
  private readonly turn = new Fifo<string>();
  private count = 0;

  /** Entries queued (including ones the caller has since marked dropped). */
  get length(): number {
    return this.count;
  }

  push(key: string, item: T): void {
    let list = this.byKey.get(key);
    if (!list) {
      list = new Fifo<T>();
      this.byKey.set(key, list);
      this.turn.push(key);
    }
    list.push(item);
    this.count++;
  }

  /** The head of the next key's FIFO; that key then goes to the back of the turn. */
  shift(): T | undefined {
    const key = this.turn.shift();
    if (key === undefined) return undefined;
    const list = this.byKey.get(key)!;
    const item = list.shift();
    this.count--;
    if (list.length > 0) this.turn.push(key);
    else this.byKey.delete(key);
    return item;
  }
}
