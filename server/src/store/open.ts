/** Opens the store a configuration asks for: PostgreSQL with a database URL, else SQLite in the data directory. */
import type { Store } from './store';
import { PostgresStore, type PostgresStoreOptions } from './postgres-store';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store';

export async function openStore(
  o: { dataDir: string; databaseUrl?: string } & SqliteStoreOptions & PostgresStoreOptions,
): Promise<Store> {
  return o.databaseUrl ? PostgresStore.open(o.databaseUrl, o.dataDir, o) : SqliteStore.open(o.dataDir, o);
}
