import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { CredentialsMetrics } from './credentials-metrics';
import { GrpcServerMetrics } from './grpc-server-metrics';
import { HttpApiMetrics } from './http-api-metrics';
import { ServiceMetrics } from './service-metrics';

/** Whether the server should receive traffic, and why not when it should not. */
export interface Readiness {
  ready: boolean;
  /** Short machine-readable cause, e.g. "ok", "loading model", "warming up", "draining". */
  reason: string;
}
export type ReadinessProbe = () => Readiness;

export interface ClipserveMetricsOptions {
  /** Passed to the gRPC interceptor for its per-call log line. */
  logger?: Logger;
  /** prom-client's process_* and nodejs_* metrics (default true). */
  defaultMetrics?: boolean;
}

/**
 * Everything clipserve exports, on one private registry (never prom-client's global one, so that
 * several servers in one process, as in tests, do not collide): the go-grpc-prometheus gRPC
 * metrics with their interceptor, the service metrics the batcher feeds, readiness, and the
 * default process/Node.js metrics.
 */
export class ClipserveMetrics {
  readonly registry: Registry = new Registry();
  readonly grpc: GrpcServerMetrics;
  readonly service: ServiceMetrics;
  /** The OpenAI-compatible HTTP API's request metrics (server/src/http). */
  readonly http: HttpApiMetrics;
  readonly credentials: CredentialsMetrics;
  private probe: ReadinessProbe = () => ({ ready: false, reason: 'starting' });

  constructor(options: ClipserveMetricsOptions = {}) {
    this.grpc = new GrpcServerMetrics({ registry: this.registry, logger: options.logger });
    this.service = new ServiceMetrics(this.registry);
    this.http = new HttpApiMetrics(this.registry);
    this.credentials = new CredentialsMetrics(this.registry);
    const ready: Gauge = new Gauge({
      name: 'clipserve_ready',
      help: '1 when the model is loaded and warm and the server is not draining (what /readyz reports), else 0.',
      registers: [this.registry],
      collect: () => ready.set(this.readiness().ready ? 1 : 0),
    });
    if (options.defaultMetrics ?? true) this.addDefaultMetrics();
  }

  /**
   * prom-client's default process_* and nodejs_* metrics, minus the gauges it names with a
   * `_total` suffix (nodejs_active_handles_total, ...): Prometheus reserves that suffix for
   * counters, `promtool check metrics` rejects the scrape because of them, and each is just the
   * sum of the per-type gauge exported next to it (nodejs_active_handles{type}).
   */
  private addDefaultMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
    for (const metric of this.registry.getMetricsAsArray()) {
      const { name, type } = metric as unknown as { name: string; type: string };
      if (type === 'gauge' && name.endsWith('_total')) this.registry.removeSingleMetric(name);
    }
  }

  /** Installs the function /readyz and `clipserve_ready` ask; until then the server is "starting". */
  setReadinessProbe(probe: ReadinessProbe): void {
    this.probe = probe;
  }

  readiness(): Readiness {
    try {
      return this.probe();
    } catch (err) {
      // A probe that throws means we cannot vouch for the server: report not ready, with the cause.
      return { ready: false, reason: `readiness probe failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }
}
