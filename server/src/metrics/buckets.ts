/**
 * Histogram buckets, chosen for the latencies clipserve really has. The range is wide: BPE
 * tokenization of a caption takes tens of microseconds, while a ViT-L/14 image batch on CPU
 * takes seconds to tens of seconds. Prometheus's default buckets (5 ms … 10 s) would put every
 * tokenization in the first bucket and every large CPU batch in +Inf.
 */

/** End-to-end RPC handling time: a cached or text-only call finishes in about a millisecond, and a
 *  large image request queued behind CPU batches can take tens of seconds. */
export const RPC_HANDLING_SECONDS_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120,
];

/** Time an item waits in the batching queue before its batch starts: zero when idle, up to many
 *  batch durations under overload (after which items are shed as `overload`/`deadline`). */
export const QUEUE_WAIT_SECONDS_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** Per-item preprocessing: tokenization is sub-millisecond; decoding and resizing a large JPEG
 *  or PNG to 224x224 takes milliseconds to a few hundred milliseconds. */
export const PREPROCESS_SECONDS_BUCKETS: readonly number[] = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];

/** One model forward pass over a batch: about a millisecond for the tiny demo model, up to tens of
 *  seconds for a full ViT-L/14 image batch on CPU. */
export const INFERENCE_SECONDS_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160,
];

/** Items per model batch: powers of two up to the largest batch the batcher may form. */
export const BATCH_SIZE_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
