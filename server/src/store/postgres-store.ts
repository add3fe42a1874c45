/**
 * The shared store: a PostgreSQL database that every replica opens (datasets, jobs, events,
 * model versions, the active version, job ownership and heartbeats), through a connection pool
 * (node-postgres). Notifications travel by LISTEN/NOTIFY to every replica. The data directory
 * still holds the artifacts as files (a shared volume is fine for those).
 */
import * as path from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { migrateToLatest } from './migrations';
import { PgListener } from './pg-listener';
import type { Database as Schema } from './schema';
import { NOTIFY_CHANNEL, parseNotification, SqlStore } from './sql-store';
import { StoreError } from './store';

const INT8_OID = 20;
const CONNECT_TIMEOUT_MS = 10_000;

/** bigint columns hold Unix milliseconds and counts, all far below 2^53: read them as numbers. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** The URL without its password, for logs and errors. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

export interface PostgresStoreOptions {
  /** Pool size (default 10). */
  maxConnections?: number;
  /** A broken connection (the pool replaces it; the listening one reconnects by itself). */
  onConnectionError?: (err: Error) => void;
}

export class PostgresStore extends SqlStore {
  private constructor(
    db: Kysely<Schema>,
    dataDir: string,
    private readonly listener: PgListener,
  ) {
    super(db, dataDir, 'postgres', true);
  }

  static async open(url: string, dataDir: string, o: PostgresStoreOptions = {}): Promise<PostgresStore> {
    if (!/^postgres(ql)?:\/\//.test(url))
      throw new StoreError(
        `the database URL must start with postgres:// or postgresql://, got ${JSON.stringify(redactDatabaseUrl(url))}`,
      );
    // A database that does not answer fails the start (or the call) in 10 s instead of hanging.
    const pool = new pg.Pool({
      connectionString: url,
      max: o.maxConnections ?? 10,
      types,
      keepAlive: true,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    });
    // An idle pooled connection that breaks (a server restart) is dropped from the pool; without a
    // listener the error would take the process down.
    pool.on('error', (err) => o.onConnectionError?.(err));
    const db = new Kysely<Schema>({ dialect: new PostgresDialect({ pool }) });
    let store: PostgresStore | undefined;
    const listener = new PgListener({
      connectionString: url,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
      channel: NOTIFY_CHANNEL,
      onPayload: (payload) => {
        const n = parseNotification(payload);
        if (n) store?.emit(n);
      },
      onResync: () => store?.emit({ kind: 'resync' }),
      onError: (err) => o.onConnectionError?.(err),
    });
    try {
      await migrateToLatest(db, 'postgres');
      await listener.start();
    } catch (err) {
      await listener.close();
      await db.destroy();
      throw new StoreError(`cannot use the PostgreSQL database ${redactDatabaseUrl(url)}: ${(err as Error).message}`);
    }
    store = new PostgresStore(db, path.resolve(dataDir), listener);
    return store;
  }

  protected async release(): Promise<void> {
    await this.listener.close();
    await this.db.destroy();
  }
}
