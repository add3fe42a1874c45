/**
 * The embedded store: one SQLite file (better-sqlite3, WAL mode) in the data directory, for one
 * host. Refused on a network filesystem and while another host holds the directory's host lock
 * (sqlite-guard.ts). Notifications reach this process only; other processes on the same host poll.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { migrateToLatest } from './migrations';
import type { Database as Schema } from './schema';
import { assertLocalFilesystem, SqliteHostLock } from './sqlite-guard';
import { SqlStore } from './sql-store';
import { StoreError } from './store';

export const DB_FILE = 'clipserve.db';

export interface SqliteStoreOptions {
  /** This host's identity for the host lock (default os.hostname()). */
  hostname?: string;
  /** statfs, replaceable to test the network filesystem refusal. */
  statfs?: (p: string) => { type: number | bigint };
}

export class SqliteStore extends SqlStore {
  private constructor(
    db: Kysely<Schema>,
    dataDir: string,
    private readonly sqlite: Database.Database,
    private readonly lock: SqliteHostLock,
  ) {
    super(db, dataDir, 'sqlite', false);
  }

  static async open(dataDir: string, o: SqliteStoreOptions = {}): Promise<SqliteStore> {
    const dir = path.resolve(dataDir);
    fs.mkdirSync(dir, { recursive: true });
    assertLocalFilesystem(dir, o.statfs);
    const lock = SqliteHostLock.acquire(dir, o.hostname ?? os.hostname());
    let sqlite: Database.Database;
    try {
      sqlite = new Database(path.join(dir, DB_FILE));
    } catch (err) {
      lock.release();
      throw new StoreError(`cannot open ${path.join(dir, DB_FILE)}: ${(err as Error).message}`);
    }
    const db = new Kysely<Schema>({ dialect: new SqliteDialect({ database: sqlite }) });
    try {
      // WAL: readers never block the writer; synchronous=NORMAL is durable against process crashes
      // (a commit is in the WAL before the call returns), which is what a restart needs.
      sqlite.pragma('journal_mode = WAL');
      sqlite.pragma('synchronous = NORMAL');
      sqlite.pragma('foreign_keys = ON');
      sqlite.pragma('busy_timeout = 5000');
      // BEGIN IMMEDIATE: processes of this host starting together apply each migration once.
      sqlite.exec('BEGIN IMMEDIATE');
      try {
        await migrateToLatest(db, 'sqlite');
        sqlite.exec('COMMIT');
      } catch (err) {
        if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      await db.destroy();
      lock.release();
      throw err instanceof StoreError
        ? err
        : new StoreError(`cannot prepare ${path.join(dir, DB_FILE)}: ${(err as Error).message}`);
    }
    return new SqliteStore(db, dir, sqlite, lock);
  }

  protected async release(): Promise<void> {
    await this.db.destroy(); // closes the better-sqlite3 handle
    this.lock.release();
  }

  /** PRAGMA integrity_check: "ok" for a sound file. */
  integrityCheck(): string {
    return String(this.sqlite.pragma('integrity_check', { simple: true }));
  }

  /** A PRAGMA's value (tests read journal_mode). */
  pragma(name: string): unknown {
    return this.sqlite.pragma(name, { simple: true });
  }
}
