/** Latency figures of the hardening suites: percentiles, and the server's own event-loop delay. */
import * as http from 'node:http';

export function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** The server's Prometheus exposition text (/metrics on its metrics port). */
export function scrapeMetrics(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
}

/** The server's own event-loop delay since the previous scrape (prom-client resets it per scrape), in ms. */
export async function loopDelay(port: number): Promise<{ p99: number; max: number }> {
  const text = await scrapeMetrics(port);
  const read = (name: string) =>
    1000 * Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { p99: read('nodejs_eventloop_lag_p99_seconds'), max: read('nodejs_eventloop_lag_max_seconds') };
}
