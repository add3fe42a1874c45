/**
 * One dedicated PostgreSQL connection that LISTENs on the store's channel (a pooled connection
 * cannot: LISTEN belongs to a session). When the connection drops it reconnects with backoff and
 * reports a `resync`, since notifications sent meanwhile are lost; the pollers behind every
 * notification-driven path catch up on it.
 */
import pg from 'pg';

export interface PgListenerOptions {
  connectionString: string;
  connectTimeoutMs: number;
  channel: string;
  onPayload: (payload: string) => void;
  /** After a reconnect (notifications may have been missed). */
  onResync: () => void;
  onError: (err: Error) => void;
}

const MAX_BACKOFF_MS = 30_000;

export class PgListener {
  private client: pg.Client | undefined;
  private closed = false;
  private backoffMs = 500;
  private retry: NodeJS.Timeout | undefined;

  constructor(private readonly o: PgListenerOptions) {
    if (!/^[a-z_][a-z0-9_]*$/.test(o.channel)) throw new Error(`bad channel name ${o.channel}`);
  }

  /** The first connection: its failure is the caller's (the store does not open). */
  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.o.connectionString,
      keepAlive: true,
      connectionTimeoutMillis: this.o.connectTimeoutMs,
    });
    client.on('notification', (m) => {
      if (m.channel === this.o.channel && m.payload !== undefined) this.o.onPayload(m.payload);
    });
    const lost = (err?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      client.end().catch(() => undefined);
      if (this.closed) return;
      if (err) this.o.onError(err);
      this.retry = setTimeout(() => void this.reconnect(), this.backoffMs);
      this.retry.unref();
      this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    };
    client.on('error', (err) => lost(err));
    client.on('end', () => lost());
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${this.o.channel}`);
    } catch (err) {
      this.client = undefined;
      client.end().catch(() => undefined);
      throw err;
    }
    this.backoffMs = 500;
  }

  private async reconnect(): Promise<void> {
    if (this.closed) return;
    try {
      await this.connect();
      this.o.onResync();
    } catch (err) {
      this.o.onError(err as Error);
      this.retry = setTimeout(() => void this.reconnect(), this.backoffMs);
      this.retry.unref();
      this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
