/**
 * Background work (fine-tuning) yields the CPU to serving: a worker thread lowers its own
 * scheduling priority before it starts any native threads. On Linux the nice value is per thread
 * and inherited by the threads a thread creates (onnxruntime's intra-op pool, libvips' workers
 * started from it), so this reaches exactly the background work and nothing else.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

/** 'below-normal': serving's own preprocessing, which must never delay the event loop (probes,
 *  I/O) or inference already under way; 'low': background work. */
export type ThreadPriority = 'normal' | 'below-normal' | 'low';

export function lowerThisThreadPriority(level: ThreadPriority = 'low'): void {
  if (level === 'normal') return;
  try {
    os.setPriority(level === 'low' ? os.constants.priority.PRIORITY_LOW : os.constants.priority.PRIORITY_BELOW_NORMAL);
  } catch {
    /* best effort: some platforms refuse; the work then just runs at normal priority */
  }
}

/**
 * For a process that exists only for background work (a child process): every thread it has now
 * (V8's, libuv's pool if already started), so that all the threads they start later inherit it.
 */
export function lowerWholeProcessPriority(level: ThreadPriority = 'low'): void {
  lowerThisThreadPriority(level);
  if (level === 'normal') return;
  let tids: string[] = [];
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch {
    return; // not Linux: the main thread's priority is what the platform offers
  }
  const value = level === 'low' ? os.constants.priority.PRIORITY_LOW : os.constants.priority.PRIORITY_BELOW_NORMAL;
  for (const tid of tids) {
    try {
      os.setPriority(Number(tid), value);
    } catch {
      /* a thread that ended meanwhile */
    }
  }
}
