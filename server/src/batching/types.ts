/**
 * Vocabulary shared by the dynamic batcher and whoever observes it. Nothing here knows about gRPC
 * or onnxruntime: the batcher only moves opaque items from many callers into batched runs.
 */

/** One queue per input kind: text and image batches run through different encoders. */
export type Modality = 'text' | 'image';

/** Why an item left the queue without an embedding. */
export type RejectReason =
  'bad_image' | 'too_large' | 'overload' | 'key_share' | 'caller_limit' | 'deadline' | 'cancelled';

/**
 * Hook for metrics (implemented with prom-client in server/src/metrics). Calls are synchronous and
 * must be cheap; the batcher never lets an observer exception escape into a caller's result.
 */
export interface BatcherObserver {
  /** Items admitted but not yet taken into a batch (preparing or waiting), after every change. */
  queueDepth(modality: Modality, depth: number): void;
  /** One inference run: its size, each item's seconds from admission to run start, and the run's seconds. */
  batchRun(modality: Modality, size: number, queueWaitSeconds: number[], inferenceSeconds: number): void;
  /** One item dropped before inference (or refused at admission), with the reason. */
  itemRejected(modality: Modality, reason: RejectReason): void;
  /** One item's preparation (image decode + resize, text tokenization) finished, successfully or not. */
  preprocessed(modality: Modality, seconds: number): void;
  /** `count` items embedded by a successful run. */
  embedded(modality: Modality, count: number): void;
  /** How many distinct callers (SubmitOptions.key) have items queued, after every change. */
  queueCallers?(modality: Modality, callers: number): void;
}

/** Per-call options: the caller's deadline (epoch milliseconds, as Date.now()), cancellation and identity. */
export interface SubmitOptions {
  deadline?: number;
  signal?: AbortSignal;
  /**
   * Who is asking, as an opaque string (the serving layer passes an API key's name or the peer's
   * address; the batcher never interprets it). Items are scheduled fairly across keys and one key
   * may hold only its share of the queue. Absent: the anonymous key ''.
   */
  key?: string;
}
