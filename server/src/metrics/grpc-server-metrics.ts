import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { Counter, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { RPC_HANDLING_SECONDS_BUCKETS } from './buckets';
import { ALL_GRPC_CODES, goCodeName, logLevelForCode } from './grpc-codes';

/** go-grpc-prometheus's `grpc_type` label values. */
export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/** The metadata key that carries the per-call request id, in and out. */
export const REQUEST_ID_METADATA_KEY = 'x-request-id';

/** A client-supplied request id is only echoed and logged when it looks like an id; anything else
 *  (too long, odd characters) is replaced, so the logs cannot be fed arbitrary text through it. */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The id a client offered in its metadata, when it is acceptable as one (see above). */
export function offeredRequestId(metadata: grpc.Metadata): string | undefined {
  return acceptableRequestId(metadata.get(REQUEST_ID_METADATA_KEY)[0]);
}

/** `offered` when it is acceptable as a request id (the HTTP API reads it from a header). */
export function acceptableRequestId(offered: unknown): string | undefined {
  return typeof offered === 'string' && ACCEPTABLE_REQUEST_ID.test(offered) ? offered : undefined;
}

/**
 * A client whose deadline expires resets the stream, and that reset usually reaches the server
 * a little BEFORE the server's own deadline timer fires: the server's deadline is its receive
 * time plus the grpc-timeout the client sent (its remaining time, rounded up), so it trails the
 * client's by the request's transit time. A cancellation this close to the deadline is the
 * deadline (the client saw DEADLINE_EXCEEDED), not a deliberate cancel.
 */
const CLIENT_DEADLINE_LEAD_MS = 100;

/** Status details can quote a server-side message; logs keep only its beginning. */
const MAX_LOGGED_DETAILS = 200;

export interface GrpcServerMetricsOptions {
  registry: Registry;
  /** Logs one line per finished call (request id, method, code, duration); never payloads. */
  logger?: Logger;
}

interface MethodLabels {
  grpc_type: GrpcType;
  grpc_service: string;
  grpc_method: string;
}

/** go-grpc-prometheus's splitMethodName: "/pkg.Service/Method" -> ["pkg.Service", "Method"]. */
export function splitMethodPath(path: string): [service: string, method: string] {
  const trimmed = path.startsWith('/') ? path.slice(1) : path;
  const slash = trimmed.indexOf('/');
  return slash >= 0 ? [trimmed.slice(0, slash), trimmed.slice(slash + 1)] : ['unknown', 'unknown'];
}

export function grpcTypeOf(requestStream: boolean, responseStream: boolean): GrpcType {
  if (!requestStream && !responseStream) return 'unary';
  if (requestStream && !responseStream) return 'client_stream';
  if (!requestStream && responseStream) return 'server_stream';
  return 'bidi_stream';
}

/** The status argument of a server call's sendStatus (grpc-js does not export its name). */
type TransportStatus = Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0];

function deadlineMillis(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/**
 * gRPC server metrics with the names, labels and counting rules of grpc-ecosystem's
 * go-grpc-prometheus (server_metrics.go), so dashboards and alerts written for Go services work
 * unchanged: started/handled counters, stream message counters and the handling-time histogram.
 *
 * It is a grpc-js (>= 1.10) server interceptor. Put it FIRST in the server's interceptor list:
 * grpc-js ends some calls itself, below every interceptor (deadline expiry, a request message that
 * does not decode or exceeds the size limit), and only the interceptor wrapping the transport call
 * directly sees the status it sends then. At any other position such calls are still counted
 * exactly once, but their code is inferred from the cancellation (DeadlineExceeded if the
 * deadline has passed, Canceled otherwise).
 */
export class GrpcServerMetrics {
  readonly interceptor: grpc.ServerInterceptor;

  private readonly started: Counter<keyof MethodLabels>;
  private readonly handled: Counter<keyof MethodLabels | 'grpc_code'>;
  private readonly msgReceived: Counter<keyof MethodLabels>;
  private readonly msgSent: Counter<keyof MethodLabels>;
  private readonly handlingSeconds: Histogram<keyof MethodLabels>;
  private readonly logger?: Logger;

  constructor(options: GrpcServerMetricsOptions) {
    const registers = [options.registry];
    const methodLabels = ['grpc_type', 'grpc_service', 'grpc_method'] as const;
    this.started = new Counter({
      name: 'grpc_server_started_total',
      help: 'Total number of RPCs started on the server.',
      labelNames: methodLabels,
      registers,
    });
    this.handled = new Counter({
      name: 'grpc_server_handled_total',
      help: 'Total number of RPCs completed on the server, regardless of success or failure.',
      labelNames: [...methodLabels, 'grpc_code'],
      registers,
    });
    this.msgReceived = new Counter({
      name: 'grpc_server_msg_received_total',
      help: 'Total number of RPC stream messages received on the server.',
      labelNames: methodLabels,
      registers,
    });
    this.msgSent = new Counter({
      name: 'grpc_server_msg_sent_total',
      help: 'Total number of gRPC stream messages sent by the server.',
      labelNames: methodLabels,
      registers,
    });
    this.handlingSeconds = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.',
      labelNames: methodLabels,
      buckets: [...RPC_HANDLING_SECONDS_BUCKETS],
      registers,
    });
    this.logger = options.logger;
    this.interceptor = (descriptor, call) => this.intercept(descriptor, call);
  }

  /**
   * Creates every method's series at zero, as go-grpc-prometheus's InitializeMetrics does, so that
   * rate() and absent-series alerts work before the first call. Pass the service definitions the
   * server registers (e.g. `proto.clipserve.v1.Embed.service`).
   */
  preRegister(...services: grpc.ServiceDefinition[]): void {
    for (const service of services) {
      for (const def of Object.values(service)) {
        const [grpcService, grpcMethod] = splitMethodPath(def.path);
        const labels: MethodLabels = {
          grpc_type: grpcTypeOf(def.requestStream, def.responseStream),
          grpc_service: grpcService,
          grpc_method: grpcMethod,
        };
        this.started.inc(labels, 0);
        this.msgReceived.inc(labels, 0);
        this.msgSent.inc(labels, 0);
        this.handlingSeconds.zero(labels);
        for (const code of ALL_GRPC_CODES) this.handled.inc({ ...labels, grpc_code: goCodeName(code) }, 0);
      }
    }
  }

  private intercept(
    descriptor: grpc.ServerMethodDefinition<unknown, unknown>,
    call: grpc.ServerInterceptingCallInterface,
  ): grpc.ServerInterceptingCall {
    const [grpcService, grpcMethod] = splitMethodPath(descriptor.path);
    const labels: MethodLabels = {
      grpc_type: grpcTypeOf(descriptor.requestStream, descriptor.responseStream),
      grpc_service: grpcService,
      grpc_method: grpcMethod,
    };
    const startedAt = process.hrtime.bigint();
    this.started.inc(labels);

    let requestId: string = randomUUID();
    let headersSent = false;
    let finished = false;
    // Every call ends exactly once in the metrics, with the first terminal event seen: the status
    // the server sends, or the cancellation when the client (or the deadline) ended it first.
    const finish = (code: number, details: string | undefined): void => {
      if (finished) return;
      finished = true;
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const grpcCode = goCodeName(code);
      this.handled.inc({ ...labels, grpc_code: grpcCode });
      this.handlingSeconds.observe(labels, seconds);
      if (this.logger) {
        const level = logLevelForCode(code);
        const fields: Record<string, unknown> = {
          requestId,
          grpcService,
          grpcMethod,
          grpcType: labels.grpc_type,
          grpcCode,
          durationMs: Math.round(seconds * 1e6) / 1e3,
          peer: call.getPeer(),
        };
        if (code !== grpc.status.OK && details) fields.details = details.slice(0, MAX_LOGGED_DETAILS);
        this.logger[level](fields, 'rpc finished');
      }
    };

    this.watchTransportStatus(call, (status) => finish(status.code ?? grpc.status.UNKNOWN, status.details));

    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            requestId = offeredRequestId(metadata) ?? requestId;
            // Handlers read the id from their call metadata to tag their own log lines.
            metadata.set(REQUEST_ID_METADATA_KEY, requestId);
            nextMetadata(metadata);
          },
          onReceiveMessage: (message, nextMessage) => {
            if (!finished) this.msgReceived.inc(labels);
            nextMessage(message);
          },
          onCancel: () => {
            const deadline = deadlineMillis(call.getDeadline());
            const code =
              Number.isFinite(deadline) && Date.now() >= deadline - CLIENT_DEADLINE_LEAD_MS
                ? grpc.status.DEADLINE_EXCEEDED
                : grpc.status.CANCELLED;
            finish(code, 'call ended before the server sent a status');
          },
        });
      },
      sendMetadata: (metadata, nextMetadata) => {
        headersSent = true;
        metadata.set(REQUEST_ID_METADATA_KEY, requestId);
        nextMetadata(metadata);
      },
      sendMessage: (message, nextMessage) => {
        // go-grpc-prometheus counts only messages that were sent; once the call has ended
        // (cancelled, deadline passed) the transport drops whatever the handler still sends.
        if (!finished) this.msgSent.inc(labels);
        nextMessage(message);
      },
      sendStatus: (status, nextStatus) => {
        finish(status.code ?? grpc.status.UNKNOWN, status.details);
        if (headersSent) {
          nextStatus(status);
        } else {
          // A trailers-only response (an error before any message): the id travels in the trailers.
          const metadata = status.metadata?.clone() ?? new grpc.Metadata();
          metadata.set(REQUEST_ID_METADATA_KEY, requestId);
          nextStatus({ ...status, metadata });
        }
      },
    });
  }

  /**
   * grpc-js's transport call sends some statuses itself, by calling its own sendStatus method
   * (deadline timer, undecodable or oversized request, decompression failure), without passing
   * through any interceptor. When we wrap that transport call directly, an own-property wrapper
   * around its sendStatus sees those statuses too, so the call is counted with the code the
   * client actually receives rather than as a bare cancellation.
   */
  private watchTransportStatus(
    call: grpc.ServerInterceptingCallInterface,
    onStatus: (status: TransportStatus) => void,
  ): void {
    if (call instanceof grpc.ServerInterceptingCall) return; // another interceptor is below us
    const transportSendStatus = call.sendStatus.bind(call);
    call.sendStatus = (status: TransportStatus): void => {
      onStatus(status);
      transportSendStatus(status);
    };
  }
}
