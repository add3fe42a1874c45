/**
 * Whether the credentials the server re-reads (the API keys file, the TLS certificate and key)
 * are still being reloaded. A key file that became unreadable or invalid otherwise only shows as a
 * log line while revoked keys stay valid: the error counter and the last-success timestamp make it
 * alertable (deploy/prometheus/alerts.yaml: ClipserveCredentialsReloadFailing).
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export const CREDENTIALS = ['api_keys', 'tls'] as const;
export type Credential = (typeof CREDENTIALS)[number];

/** What a credentials source reports after each check of its files. */
export interface ReloadObserver {
  /** The files were read and are valid (changed or not). */
  reloadSucceeded(): void;
  /** The files could not be read or are invalid; `reason` is for the log, never the metric. */
  reloadFailed(): void;
}

export class CredentialsMetrics {
  private readonly errors: Counter<'credential'>;
  private readonly lastSuccess: Gauge<'credential'>;

  constructor(registry: Registry) {
    this.errors = new Counter({
      name: 'clipserve_credentials_reload_errors_total',
      help: 'Checks of a credentials file (api_keys, tls) that found it unreadable or invalid; the previous credentials stay in force (or, for api_keys with --auth-reload-failure=deny, keyed calls are refused).',
      labelNames: ['credential'],
      registers: [registry],
    });
    this.lastSuccess = new Gauge({
      name: 'clipserve_credentials_last_reload_success_timestamp_seconds',
      help: 'Unix time of the last check that found the credentials file valid (0: never, e.g. not configured).',
      labelNames: ['credential'],
      registers: [registry],
    });
    for (const c of CREDENTIALS) {
      this.errors.labels(c).inc(0);
      this.lastSuccess.labels(c).set(0);
    }
  }

  observer(credential: Credential): ReloadObserver {
    return {
      reloadSucceeded: () => this.lastSuccess.labels(credential).set(Date.now() / 1000),
      reloadFailed: () => this.errors.labels(credential).inc(),
    };
  }
}
