import type { Modality, RejectReason } from './types';

/** Base class of the batcher's own failures; `reason` is what the observer recorded, if anything. */
export class BatcherError extends Error {
  constructor(
    message: string,
    readonly modality: Modality,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Admission refused: the modality's queue holds `queueBound` items already. Retry later. */
export class QueueFullError extends BatcherError {
  readonly reason: RejectReason = 'overload';
  /** `unit`: 'items', or what the batcher's cost counts ('pixels queued for decoding', 'characters queued for tokenizing'). */
  constructor(
    modality: Modality,
    readonly depth: number,
    readonly requested: number,
    readonly bound: number,
    unit = 'items queued',
  ) {
    super(`${modality} queue is full (${depth} ${unit} + ${requested} requested > bound ${bound})`, modality);
  }
}

/**
 * Admission refused: this caller (key) already holds its share of the queue while the queue is
 * shared with others. Retry later; other callers are unaffected.
 */
export class KeyShareExceededError extends QueueFullError {
  override readonly reason: RejectReason = 'key_share';
  constructor(modality: Modality, held: number, requested: number, share: number, unit: string) {
    super(modality, held, requested, share, unit);
    this.message = `this caller's share of the ${modality} queue is used up (it holds ${held} ${unit} + ${requested} requested > its share ${share}); the queue is shared with other callers`;
  }
}

/** The caller's deadline passed before its item ran. */
export class DeadlineExceededError extends BatcherError {
  readonly reason: RejectReason = 'deadline';
  constructor(modality: Modality) {
    super(`deadline exceeded while queued for ${modality} inference`, modality);
  }
}

/** The caller aborted (its AbortSignal fired) before its item finished. */
export class CancelledError extends BatcherError {
  readonly reason: RejectReason = 'cancelled';
  constructor(modality: Modality) {
    super(`cancelled while queued for ${modality} inference`, modality);
  }
}

/** The batcher was closed (server shutting down): no new items, queued ones are dropped. */
export class BatcherClosedError extends BatcherError {
  constructor(modality: Modality) {
    super(`the ${modality} batcher is closed (server shutting down)`, modality);
  }
}

/** The encoder failed for a whole batch; every item of that batch gets this error. */
export class InferenceError extends BatcherError {
  constructor(
    modality: Modality,
    readonly failure: unknown,
  ) {
    super(`${modality} inference failed: ${failure instanceof Error ? failure.message : String(failure)}`, modality);
  }
}
