/**
 * Builds the per-caller admission interceptor of the embedding service from the serve options:
 * rate and in-flight limits per caller, and the batchers' queue share, checked from a call's
 * metadata before its message is decoded (see grpc/admission-interceptor.ts).
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { createAdmissionInterceptor } from '../grpc/admission-interceptor';
import { CallerLimiter } from '../grpc/admission-limiter';
import { EMBEDDING_SERVICE_NAME } from '../grpc/proto';
import { RefusalHolds } from '../grpc/refusal-holds';
import { RefusalLog } from '../grpc/refusal-log';
import type { ModelHost } from '../inference/model-host';
import type { EmbeddingModel } from '../inference/model-port';
import type { ClipserveMetrics } from '../metrics';
import type { ServeConfig } from './config';

/** One log line per caller and reason per interval, with the count of the refusals in between. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;
/** Callers whose buckets are remembered; idle ones beyond it are forgotten (see CallerLimiter). */
const MAX_CALLERS = 10_000;
/** Refusals held back until their caller could be admitted (a timer and a stream each), and for how long at most. */
const MAX_HELD_REFUSALS = 1024;
const MAX_HOLD_MS = 1000;
/**
 * A caller holding its queue share is refused before decoding while another caller has had items
 * queued within this time: a well-behaved caller's item stays queued for milliseconds, less than a
 * large message takes to arrive and decode, so "queued right now" would rarely catch the flood.
 */
const SHARED_WITHIN_MS = 1000;

export function callerAdmission(o: {
  config: ServeConfig;
  host: Pick<ModelHost<EmbeddingModel>, 'ready' | 'embedder'>;
  metrics: ClipserveMetrics;
  logger: Logger;
}): grpc.ServerInterceptor {
  const { config, host, metrics } = o;
  const servicePrefix = `/${EMBEDDING_SERVICE_NAME}/`;
  return createAdmissionInterceptor({
    limiter: new CallerLimiter({
      ratePerSecond: config.callerRate,
      burst: config.callerBurst,
      maxConcurrent: config.callerConcurrency,
      invalidPerSecond: config.callerInvalidRate,
      invalidBurst: config.callerInvalidBurst,
      maxCallers: MAX_CALLERS,
    }),
    // GetModelInfo queues nothing and clients call it to learn the limits: never refused.
    applies: (path) => path.startsWith(servicePrefix) && path !== `${servicePrefix}GetModelInfo`,
    // Unpinned calls go to the active version's batchers; while none is loaded the gate refuses anyway.
    overShare:
      config.queueCallerShare < 1
        ? (caller, modality) => host.ready && host.embedder().holdsShare(caller, modality, SHARED_WITHIN_MS)
        : undefined,
    count: (modality, reason) => metrics.service.itemRejected(modality, reason),
    log: new RefusalLog(o.logger, REFUSAL_LOG_INTERVAL_MS),
    holds: new RefusalHolds(MAX_HELD_REFUSALS, MAX_HOLD_MS),
  });
}
