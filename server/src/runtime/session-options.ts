/**
 * onnxruntime session config entries every clipserve session uses (and the bench's raw limit, so
 * both run the same configuration).
 *
 * No busy-waiting: by default onnxruntime's intra-op threads spin for a while after each parallel
 * section (~30 ms of CPU burnt after every idle run of a ViT-B/32 tower on this project's 2-core
 * bench host). Between the runs of a server that is not saturated, those spins take the cores the
 * event loop, the image-preprocessing workers and the other tower's session need; with the cores
 * shared, served ViT-B/32 throughput and latency were 2-3× worse with spinning on. Measurements
 * are in docs/benchmarks.md.
 */
export const RUNTIME_SESSION_EXTRA = {
  extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
} as const;
