/**
 * The schema as versioned migrations, the same list for SQLite and PostgreSQL, applied at start by
 * Kysely's Migrator (its `kysely_migration` table records which ran). On PostgreSQL the Migrator
 * holds a session advisory lock and runs the pending migrations in one transaction, so replicas
 * starting at once apply each exactly once; on SQLite the caller wraps the run in BEGIN IMMEDIATE
 * (sqlite-store.ts), which does the same for processes sharing the file. Never edit a migration
 * that has shipped: append a new one.
 */
import { Kysely, Migrator, sql, type Migration, type MigrationProvider } from 'kysely';
import type { StoreBackend } from './store';

// A migration runs against every past schema, not today's typed one, so (as Kysely's docs do) it
// sees the database untyped.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type UntypedDb = Kysely<any>;

/** Columns that databases created before the migrations existed may lack (SQLite only). */
const LEGACY_COLUMNS: {
  table: string;
  column: string;
  type: 'text' | 'integer' | 'bigint';
  fallback: string | number;
}[] = [
  { table: 'jobs', column: 'owner', type: 'text', fallback: '' },
  { table: 'jobs', column: 'heartbeat_ms', type: 'bigint', fallback: 0 },
  { table: 'jobs', column: 'cancel_requested', type: 'integer', fallback: 0 },
  { table: 'jobs', column: 'last_seq', type: 'integer', fallback: 0 },
  { table: 'model_versions', column: 'ord', type: 'bigint', fallback: 0 },
];

function initial(backend: StoreBackend): Migration {
  return {
    async up(db: UntypedDb): Promise<void> {
      await db.schema
        .createTable('datasets')
        .ifNotExists()
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('format', 'text', (c) => c.notNull())
        .addColumn('dir', 'text', (c) => c.notNull())
        .addColumn('num_pairs', 'bigint', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('jobs')
        .ifNotExists()
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('ord', 'bigint', (c) => c.notNull().unique())
        .addColumn('method', 'text', (c) => c.notNull())
        .addColumn('base_model', 'text', (c) => c.notNull())
        .addColumn('training_file', 'text', (c) => c.notNull())
        .addColumn('validation_file', 'text', (c) => c.notNull())
        .addColumn('hyperparameters', 'text', (c) => c.notNull())
        .addColumn('suffix', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('fine_tuned_model', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('started_at', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('finished_at', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('error', 'text')
        .addColumn('metrics_before', 'text', (c) => c.notNull().defaultTo('{}'))
        .addColumn('metrics_after', 'text', (c) => c.notNull().defaultTo('{}'))
        .addColumn('step', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('total_steps', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('owner', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('heartbeat_ms', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_seq', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable('job_events')
        .ifNotExists()
        .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id'))
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('created_at_ms', 'bigint', (c) => c.notNull())
        .addColumn('message', 'text', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('job_events_pk', ['job_id', 'seq'])
        .execute();
      await db.schema
        .createTable('model_versions')
        .ifNotExists()
        .addColumn('version', 'text', (c) => c.primaryKey())
        .addColumn('ord', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('bundle_dir', 'text', (c) => c.notNull())
        .addColumn('parent_version', 'text', (c) => c.notNull())
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('metrics', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('settings')
        .ifNotExists()
        .addColumn('key', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('counters')
        .ifNotExists()
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('value', 'bigint', (c) => c.notNull())
        .execute();

      // A SQLite file from the builds before migrations: add what its tables lack, derive the new
      // columns from the rows (rowid is insertion order, the order ListModels showed).
      if (backend === 'sqlite') {
        const tables = await db.introspection.getTables();
        for (const l of LEGACY_COLUMNS) {
          const t = tables.find((x) => x.name === l.table);
          if (t && !t.columns.some((c) => c.name === l.column)) {
            await db.schema
              .alterTable(l.table)
              .addColumn(l.column, l.type, (c) => c.notNull().defaultTo(l.fallback))
              .execute();
            if (l.table === 'model_versions') await sql`UPDATE model_versions SET ord = rowid`.execute(db);
          }
        }
      }
      await sql`UPDATE jobs SET last_seq = COALESCE((SELECT MAX(e.seq) FROM job_events e WHERE e.job_id = jobs.id), 0)`.execute(
        db,
      );
      await sql`INSERT INTO counters (name, value) SELECT 'job_ord', COALESCE(MAX(ord), 0) FROM jobs`.execute(db);
      await sql`INSERT INTO counters (name, value) SELECT 'model_ord', COALESCE(MAX(ord), 0) FROM model_versions`.execute(
        db,
      );
      // The queue reads queued jobs in creation order; recovery reads the unfinished ones.
      await db.schema.createIndex('jobs_state_ord').ifNotExists().on('jobs').columns(['state', 'ord']).execute();
    },
  };
}

/** Datasets gain their owner (the API key that uploaded them) and a creation order for paging. */
const datasetOwner: Migration = {
  async up(db: UntypedDb): Promise<void> {
    await db.schema
      .alterTable('datasets')
      .addColumn('owner', 'text', (c) => c.notNull().defaultTo(''))
      .execute();
    await db.schema
      .alterTable('datasets')
      .addColumn('ord', 'bigint', (c) => c.notNull().defaultTo(0))
      .execute();
    // Existing rows keep their creation order (a correlated count both dialects run).
    await sql`UPDATE datasets SET ord = (SELECT COUNT(*) FROM datasets d2 WHERE d2.created_at < datasets.created_at OR (d2.created_at = datasets.created_at AND d2.id <= datasets.id))`.execute(
      db,
    );
    await sql`INSERT INTO counters (name, value) SELECT 'dataset_ord', COALESCE(MAX(ord), 0) FROM datasets`.execute(db);
    await db.schema.createIndex('datasets_owner_ord').ifNotExists().on('datasets').columns(['owner', 'ord']).execute();
  },
};

/** Every migration, in order; the names sort in that order too. */
export function migrations(backend: StoreBackend): Record<string, Migration> {
  return { '0001_initial': initial(backend), '0002_dataset_owner': datasetOwner };
}

/** Applies the pending migrations; throws with the failing migration's name and cause. */
export async function migrateToLatest(db: UntypedDb, backend: StoreBackend): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations(backend) };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(
      `database migration${failed ? ` ${failed}` : ''} failed: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}
