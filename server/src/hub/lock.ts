/**
 * A cross-process lock file for the model cache, so that pods or shells pulling the same model
 * at once (e.g. replicas sharing a cache volume) do not write the same download or bundle twice.
 * The lock is a file created with O_EXCL; its holder refreshes its mtime while working, and a
 * lock whose mtime has not moved for `staleMs` is taken over (its holder died). Works across
 * hosts on a shared filesystem, since it relies on nothing but the file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HubError } from './errors';

export interface LockOptions {
  /** A lock untouched this long is considered abandoned. */
  staleMs?: number;
  /** Give up waiting after this long. */
  timeoutMs?: number;
  pollMs?: number;
  onWait?: (holder: string) => void;
}

export interface HeldLock {
  /** Marks the lock as alive; call during long work. */
  touch(): void;
  release(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function acquireLock(file: string, opts: LockOptions = {}): Promise<HeldLock> {
  const staleMs = opts.staleMs ?? 120_000;
  const timeoutMs = opts.timeoutMs ?? 60 * 60_000;
  const pollMs = opts.pollMs ?? 500;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, `${os.hostname()} pid ${process.pid}\n`);
      fs.closeSync(fd);
      // Refresh at a third of the stale time, so a live holder is never mistaken for a dead one.
      const timer = setInterval(() => touch(file), Math.max(1000, Math.floor(staleMs / 3)));
      timer.unref();
      let released = false;
      let lastTouch = Date.now();
      return {
        touch: () => {
          // Called per downloaded chunk: refreshing once a second is plenty.
          if (Date.now() - lastTouch < 1000) return;
          lastTouch = Date.now();
          touch(file);
        },
        release: () => {
          if (released) return;
          released = true;
          clearInterval(timer);
          fs.rmSync(file, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(file);
    } catch {
      continue; // released between our open and stat
    }
    if (Date.now() - stat.mtimeMs > staleMs) {
      fs.rmSync(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new HubError(`timed out waiting for ${file} (held by ${readHolder(file)})`);
    if (!told) {
      opts.onWait?.(readHolder(file));
      told = true;
    }
    await sleep(pollMs);
  }
}

function touch(file: string): void {
  const now = new Date();
  try {
    fs.utimesSync(file, now, now);
  } catch {
    // The lock was removed (taken over as stale); the holder's work is still valid on its own.
  }
}

function readHolder(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim() || 'unknown';
  } catch {
    return 'unknown';
  }
}
