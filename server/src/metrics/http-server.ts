import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ClipserveMetrics } from './clipserve-metrics';

export interface MetricsServerOptions {
  metrics: ClipserveMetrics;
  /** TCP port; 0 picks a free ephemeral port (tests). */
  port: number;
  /** Bind address: "0.0.0.0" in a pod so kubelet probes and Prometheus reach it; 127.0.0.1 in tests. */
  host?: string;
}

export interface MetricsHttpServer {
  /** The port actually bound (differs from the requested one when that was 0). */
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

/** The metrics port could not be opened (in use, bad address, no permission). */
export class MetricsServerError extends Error {
  constructor(
    message: string,
    readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'MetricsServerError';
  }
}

function send(res: http.ServerResponse, status: number, contentType: string, body: string, head: boolean): void {
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(head ? undefined : body);
}

/**
 * The observability HTTP endpoint, on its own port so that probes and scrapes never queue behind
 * gRPC traffic or need gRPC tooling:
 *   GET /metrics  Prometheus text exposition of the clipserve registry
 *   GET /healthz  200 while the process is up and serving HTTP (liveness)
 *   GET /readyz   200 when the model is loaded and warm and the server is not draining, else 503
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsHttpServer> {
  const { metrics } = options;
  const host = options.host ?? '0.0.0.0';
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new MetricsServerError(`metrics port must be an integer in 0..65535, got ${options.port}`);
  }

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const head = method === 'HEAD';
    const path = (req.url ?? '/').split('?')[0];
    if (method !== 'GET' && !head) {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', false);
      return;
    }
    switch (path) {
      case '/metrics':
        metrics.registry.metrics().then(
          (text) => send(res, 200, metrics.registry.contentType, text, head),
          (err: unknown) =>
            send(
              res,
              500,
              'text/plain; charset=utf-8',
              `collecting metrics failed: ${err instanceof Error ? err.message : String(err)}\n`,
              head,
            ),
        );
        return;
      case '/healthz':
        send(res, 200, 'text/plain; charset=utf-8', 'ok\n', head);
        return;
      case '/readyz': {
        const readiness = metrics.readiness();
        send(res, readiness.ready ? 200 : 503, 'application/json', `${JSON.stringify(readiness)}\n`, head);
        return;
      }
      default:
        send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n', head);
    }
  });
  // Probes and scrapers open a connection per request; idle sockets must not hold close() up.
  server.keepAliveTimeout = 5_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(new MetricsServerError(`cannot listen on ${host}:${options.port}: ${err.message}`, err));
    server.once('error', onError);
    server.listen(options.port, host, () => {
      server.off('error', onError);
      // Once listening, a server 'error' is an accept failure (EMFILE under a connection flood):
      // the probes' next connection is accepted again; without a listener it would end the process.
      server.on('error', () => undefined);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    host,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
