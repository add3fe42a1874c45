export { DynamicBatcher } from './dynamic-batcher';
export type { BatcherStats, DynamicBatcherOptions } from './dynamic-batcher';
export {
  BatcherClosedError,
  BatcherError,
  CancelledError,
  DeadlineExceededError,
  InferenceError,
  KeyShareExceededError,
  QueueFullError,
} from './errors';
export type { BatcherObserver, Modality, RejectReason, SubmitOptions } from './types';
export { KeyedQueue } from './keyed-queue';
