/**
 * Everything about the connection: target syntax, TLS/mTLS credentials, keepalive, message-size
 * limits, load balancing and the retry policy, expressed as grpc-js channel options and a gRPC
 * service config (https://github.com/grpc/grpc/blob/master/doc/service_config.md).
 */
import * as grpc from '@grpc/grpc-js';
import { EMBEDDING_SERVICE, FINE_TUNE_SERVICE, HEALTH_SERVICE, MODEL_SERVICE } from './proto.js';

export interface TlsOptions {
  /** PEM root certificate(s) to trust; the system roots when omitted. */
  ca?: string | Buffer;
  /** PEM client certificate chain and private key, for mutual TLS. Give both or neither. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name to verify the server certificate against (and send as :authority), when it differs from the address's host. */
  serverName?: string;
}

export interface KeepaliveOptions {
  /** Ping interval on an idle connection (grpc.keepalive_time_ms). Default 30 000. */
  timeMs?: number;
  /** How long to wait for the ping ack before closing (grpc.keepalive_timeout_ms). Default 10 000. */
  timeoutMs?: number;
  /** Also ping while no call is active. Default false (servers commonly reject that as abuse). */
  permitWithoutCalls?: boolean;
}

export interface RetryOptions {
  /** Total attempts including the first, 2..5 (grpc-js caps it at 5). Default 5. */
  maxAttempts?: number;
  /** Default 100. */
  initialBackoffMs?: number;
  /** Default 5 000. */
  maxBackoffMs?: number;
  /** Default 2. */
  backoffMultiplier?: number;
}

export interface ChannelConfig {
  address: string;
  tls?: boolean | TlsOptions;
  keepalive?: KeepaliveOptions;
  maxSendMessageBytes?: number;
  maxReceiveMessageBytes?: number;
  loadBalancing?: 'round_robin' | 'pick_first';
  retry?: RetryOptions | false;
  channelOptions?: grpc.ChannelOptions;
}

export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Unary RPCs that are pure reads of server state, hence safe to retry. EmbedStream is not listed, nor
 *  the fine-tune calls that change state (create, cancel, activate) or stream (upload, watch). */
const IDEMPOTENT_METHODS: { service: string; method: string }[] = [
  ...['EmbedText', 'EmbedImage', 'Similarity', 'Rank', 'Classify', 'GetModelInfo'].map((method) => ({
    service: EMBEDDING_SERVICE,
    method,
  })),
  { service: HEALTH_SERVICE, method: 'Check' },
  ...['GetFineTuneJob', 'ListFineTuneJobs', 'ListDatasets'].map((method) => ({ service: FINE_TUNE_SERVICE, method })),
  { service: MODEL_SERVICE, method: 'ListModels' },
];

/**
 * Validates the address and returns the grpc-js target. Accepted: `host:port`, `[v6]:port`,
 * and the gRPC name-resolver URIs `dns:///name:port` (each A/AAAA record becomes a backend, e.g. a
 * Kubernetes headless service), `ipv4:a:p,b:q`, `ipv6:...` and `unix:path`.
 */
export function parseTarget(address: string): string {
  const a = address.trim();
  if (a === '') throw new TypeError('ClipClient: address is empty');
  if (/^(dns|ipv4|ipv6|unix|unix-abstract):/.test(a)) {
    if (a.startsWith('dns:') && !/:\d+$/.test(a))
      throw new TypeError(`ClipClient: ${address}: a dns target needs an explicit port`);
    return a;
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(a))
    throw new TypeError(`ClipClient: ${address}: unsupported scheme (use host:port or dns:///host:port)`);
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(a);
  if (!m || Number(m[2]) > 65535) throw new TypeError(`ClipClient: ${address}: expected host:port`);
  return a;
}

function toBuffer(v: string | Buffer | undefined): Buffer | null {
  if (v === undefined) return null;
  return typeof v === 'string' ? Buffer.from(v) : v;
}

export function channelCredentials(tls: boolean | TlsOptions | undefined): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  const o: TlsOptions = tls === true ? {} : tls;
  if ((o.cert === undefined) !== (o.key === undefined))
    throw new TypeError('ClipClient: tls.cert and tls.key go together (mutual TLS)');
  return grpc.credentials.createSsl(toBuffer(o.ca), toBuffer(o.key), toBuffer(o.cert));
}

export function serviceConfig(
  loadBalancing: 'round_robin' | 'pick_first',
  retry: RetryOptions | false | undefined,
): string {
  const config: Record<string, unknown> = { loadBalancingConfig: [{ [loadBalancing]: {} }] };
  if (retry !== false) {
    const r = retry ?? {};
    const maxAttempts = r.maxAttempts ?? 5;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 2 || maxAttempts > 5)
      throw new RangeError('ClipClient: retry.maxAttempts must be an integer in 2..5');
    const seconds = (ms: number, what: string): string => {
      if (!(ms > 0)) throw new RangeError(`ClipClient: retry.${what} must be > 0`);
      return `${(ms / 1000).toFixed(3)}s`;
    };
    config.methodConfig = [
      {
        name: IDEMPOTENT_METHODS,
        retryPolicy: {
          maxAttempts,
          initialBackoff: seconds(r.initialBackoffMs ?? 100, 'initialBackoffMs'),
          maxBackoff: seconds(r.maxBackoffMs ?? 5000, 'maxBackoffMs'),
          backoffMultiplier: r.backoffMultiplier ?? 2,
          retryableStatusCodes: ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'],
        },
      },
    ];
  }
  return JSON.stringify(config);
}

export function channelOptions(cfg: ChannelConfig): grpc.ChannelOptions {
  const maxSend = cfg.maxSendMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const maxReceive = cfg.maxReceiveMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const ka = cfg.keepalive ?? {};
  const opts: grpc.ChannelOptions = {
    'grpc.service_config': serviceConfig(cfg.loadBalancing ?? 'round_robin', cfg.retry),
    // Skip DNS TXT service-config lookups: the config above is authoritative for this client.
    'grpc.service_config_disable_resolution': 1,
    'grpc.max_send_message_length': maxSend,
    'grpc.max_receive_message_length': maxReceive,
    'grpc.keepalive_time_ms': ka.timeMs ?? 30_000,
    'grpc.keepalive_timeout_ms': ka.timeoutMs ?? 10_000,
    'grpc.keepalive_permit_without_calls': ka.permitWithoutCalls ? 1 : 0,
    // A request larger than the per-call retry buffer is committed on first send and never retried;
    // size the buffer to the largest request we are allowed to send.
    'grpc.per_rpc_retry_buffer_size': maxSend,
    'grpc.retry_buffer_size': Math.max(maxSend * 4, 1 << 24),
    'grpc.enable_retries': cfg.retry === false ? 0 : 1,
  };
  if (typeof cfg.tls === 'object' && cfg.tls.serverName) {
    opts['grpc.ssl_target_name_override'] = cfg.tls.serverName;
    opts['grpc.default_authority'] = cfg.tls.serverName;
  }
  return { ...opts, ...cfg.channelOptions };
}
