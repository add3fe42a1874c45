/**
 * The tables as Kysely sees them (one TypeScript shape for both dialects). JSON values are stored
 * as TEXT and timestamps as integers (seconds, or milliseconds where the column says `_ms`) so that
 * SQLite and PostgreSQL hold exactly the same values.
 */
import type { Generated } from 'kysely';

export interface DatasetsTable {
  id: string;
  name: string;
  format: string;
  dir: string;
  num_pairs: number;
  bytes: number;
  created_at: number;
  /** Creation order (from counters.dataset_ord): the page cursor of ListDatasets. */
  ord: number;
  /** The API key name that uploaded it ('' without keys). */
  owner: Generated<string>;
}

export interface JobsTable {
  id: string;
  /** Creation order (from counters.job_ord): the page cursor and the queue order. */
  ord: number;
  method: string;
  base_model: string;
  training_file: string;
  validation_file: string;
  hyperparameters: string;
  suffix: string;
  state: string;
  fine_tuned_model: Generated<string>;
  created_at: number;
  started_at: Generated<number>;
  finished_at: Generated<number>;
  error: string | null;
  metrics_before: Generated<string>;
  metrics_after: Generated<string>;
  step: Generated<number>;
  total_steps: Generated<number>;
  owner: Generated<string>;
  heartbeat_ms: Generated<number>;
  cancel_requested: Generated<number>;
  /** The sequence number of the job's last event: bumping it allocates the next one under the row lock. */
  last_seq: Generated<number>;
}

export interface JobEventsTable {
  job_id: string;
  seq: number;
  type: string;
  created_at_ms: number;
  message: string;
  data: string;
}

export interface ModelVersionsTable {
  version: string;
  /** Registration order (from counters.model_ord): newest first in listings. */
  ord: number;
  name: string;
  bundle_dir: string;
  parent_version: string;
  job_id: string;
  created_at: number;
  metrics: string;
}

export interface SettingsTable {
  key: string;
  value: string;
}

/** Named sequences, bumped with UPDATE … RETURNING (portable, and serialised by the row lock). */
export interface CountersTable {
  name: string;
  value: number;
}

export interface Database {
  datasets: DatasetsTable;
  jobs: JobsTable;
  job_events: JobEventsTable;
  model_versions: ModelVersionsTable;
  settings: SettingsTable;
  counters: CountersTable;
}
