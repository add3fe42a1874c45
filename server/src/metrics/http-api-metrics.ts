/**
 * Metrics of the OpenAI-compatible HTTP API (server/src/http), named and labelled as the Node.js
 * HTTP ecosystem does (fastify-metrics, express-prom-bundle, prom-client's examples):
 * `http_requests_total` and `http_request_duration_seconds` by method, route template and status
 * code, so existing HTTP dashboards work unchanged. The route is the template ("/v1/models/:model"),
 * never the raw URL, so a client cannot create series at will; unmatched URLs count as "unmatched".
 * What the requests queue (items, batches, rejections) is counted by the shared service metrics,
 * whichever protocol brought it.
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { RPC_HANDLING_SECONDS_BUCKETS } from './buckets';

type Labels = 'method' | 'route' | 'status_code';

export const UNMATCHED_ROUTE = 'unmatched';

export class HttpApiMetrics {
  private readonly requests: Counter<Labels>;
  private readonly duration: Histogram<Labels>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({
      name: 'http_requests_total',
      help: 'Requests to the OpenAI-compatible HTTP API, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time from receiving an HTTP API request to sending its response, by method, route template and status code.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [...RPC_HANDLING_SECONDS_BUCKETS],
      registers,
    });
  }

  /** One finished request; `route` is the matched template or undefined. */
  observe(method: string, route: string | undefined, statusCode: number, seconds: number): void {
    const labels = {
      method: KNOWN_METHODS.has(method) ? method : 'other',
      route: route ?? UNMATCHED_ROUTE,
      status_code: String(statusCode),
    };
    this.requests.inc(labels);
    if (Number.isFinite(seconds) && seconds >= 0) this.duration.observe(labels, seconds);
  }
}

/** Any other method string a client invents is folded into "other" (bounded label values). */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
