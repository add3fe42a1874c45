/**
 * Background work (fine-tuning) yields the CPU to serving: a worker thread lowers its own
 * scheduling priority before it starts any native threads. On Linux the nice value is per thread
 * and inherited by the threads a thread creates (onnxruntime's intra-op pool, libvips' workers
 * started from it), so this reaches exactly the background work and nothing else.
 */
import * as os from 'node:os';

export function lowerThisThreadPriority(): void {
  try {
    os.setPriority(os.constants.priority.PRIORITY_LOW);
  } catch {
    /* best effort: some platforms refuse; the work then just runs at normal priority */
  }
}
