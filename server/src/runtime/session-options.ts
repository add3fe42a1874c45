/**
 * onnxruntime session config entries every clipserve session uses (and the bench's raw limit, so
 * both run the same configuration).
 *
 * No busy-waiting: by default onnxruntime's intra-op threads spin for a while after each parallel
 * section. Between the runs of a server that is not saturated, those spins burn the cores the
 * event loop, the image-preprocessing workers and the other tower's session need. Measurements
 * behind this choice are in docs/benchmarks.md.
 */
export const RUNTIME_SESSION_EXTRA = {
  extra: { session: { intra_op: { allow_spinning: process.env.CLIPSERVE_ORT_SPIN === '1' ? '1' : '0' }, inter_op: { allow_spinning: process.env.CLIPSERVE_ORT_SPIN === '1' ? '1' : '0' } } },
} as const;
