/**
 * What keeps the embedded SQLite database to one host: SQLite's WAL mode keeps its shared-memory
 * index per host, and network filesystems do not give it the locks it relies on, so two hosts on
 * one database file corrupt it silently. Two checks, both before the database is opened:
 * - the filesystem type (statfs f_type): known network and cluster filesystems are refused;
 * - a host lock file beside the database naming the host that uses it, refreshed while it runs:
 *   a process on another host refuses to start while the lock is fresh (processes on the same
 *   host share the WAL index safely and may share the database).
 * Both errors say what to do instead: PostgreSQL through --database-url.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StoreError } from './store';

export const HOST_LOCK_FILE = 'clipserve.db.host';

const USE_POSTGRES =
  'several replicas (or a data directory on a network volume) need a shared PostgreSQL database: --database-url postgres://… or CLIPSERVE_DATABASE_URL';

/** statfs f_type magic numbers (linux/magic.h, statfs(2)) of filesystems other hosts mount too. */
export const NETWORK_FILESYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x6969, 'nfs'],
  [0x517b, 'smb'],
  [0xff534d42, 'cifs'],
  [0xfe534d42, 'smb2'],
  [0x00c36400, 'ceph'],
  [0x73757245, 'coda'],
  [0x5346414f, 'afs'],
  [0x6b414653, 'afs'],
  [0x564c, 'ncp'],
  [0x0bd00bd0, 'lustre'],
  [0x47504653, 'gpfs'],
  [0x7461636f, 'ocfs2'],
  [0x01161970, 'gfs2'],
]);

/** The network filesystem's name for a statfs type, undefined for a local one. */
export function networkFilesystem(type: number | bigint): string | undefined {
  return NETWORK_FILESYSTEMS.get(Number(type) >>> 0);
}

/** Refuses a data directory on a network filesystem (where statfs can tell). */
export function assertLocalFilesystem(
  dir: string,
  statfs: (p: string) => { type: number | bigint } = fs.statfsSync,
): void {
  let type: number | bigint;
  try {
    type = statfs(dir).type;
  } catch {
    return; // no statfs here: the host lock below still guards
  }
  const name = networkFilesystem(type);
  if (name)
    throw new StoreError(
      `the data directory ${dir} is on a network filesystem (${name}), where the embedded SQLite database is not safe: use a local disk for one replica; ${USE_POSTGRES}`,
    );
}

interface LockContent {
  host: string;
  pid: number;
  heartbeatMs: number;
}

function readLock(file: string): LockContent | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as LockContent;
    return typeof v.host === 'string' && typeof v.heartbeatMs === 'number' ? v : undefined;
  } catch {
    return undefined; // absent, or torn by a crash mid-write: treat as free
  }
}

/** The lock a process holds on a SQLite data directory while it runs. */
export class SqliteHostLock {
  private timer: NodeJS.Timeout | undefined;
  private readonly file: string;

  private constructor(
    dataDir: string,
    private readonly host: string,
    private readonly staleMs: number,
  ) {
    this.file = path.join(dataDir, HOST_LOCK_FILE);
  }

  /**
   * Takes the lock for `host`, or throws StoreError when another host refreshed it within
   * `staleMs` (a host that stopped without releasing it is presumed gone after that long).
   */
  static acquire(dataDir: string, host: string, staleMs = 30_000): SqliteHostLock {
    const lock = new SqliteHostLock(dataDir, host, staleMs);
    lock.check();
    lock.write();
    // Two hosts starting at the same instant both wrote: the last rename wins, the other sees it.
    lock.check();
    lock.timer = setInterval(
      () => {
        try {
          lock.write();
        } catch {
          /* a full disk: the next refresh retries; the lock only goes stale after staleMs */
        }
      },
      Math.max(1000, Math.floor(staleMs / 3)),
    );
    lock.timer.unref();
    return lock;
  }

  private check(): void {
    const held = readLock(this.file);
    if (!held || held.host === this.host) return;
    const age = Date.now() - held.heartbeatMs;
    if (age >= this.staleMs) return;
    throw new StoreError(
      `the SQLite database in ${path.dirname(this.file)} is in use by host ${JSON.stringify(held.host)} (${HOST_LOCK_FILE} refreshed ${Math.max(0, Math.round(age / 1000))} s ago; it is free ${Math.round(this.staleMs / 1000)} s after that host stops): SQLite cannot be shared between hosts; ${USE_POSTGRES}`,
    );
  }

  private write(): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(
      tmp,
      JSON.stringify({ host: this.host, pid: process.pid, heartbeatMs: Date.now() } satisfies LockContent),
    );
    fs.renameSync(tmp, this.file);
  }

  /** Stops refreshing; removes the file when it still names this process (same-host siblings rewrite it on their next refresh). */
  release(): void {
    clearInterval(this.timer);
    const held = readLock(this.file);
    if (held && held.host === this.host && held.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}
