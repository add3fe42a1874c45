/**
 * Refuses a caller's call from its metadata, before its request message is read or decoded, when
 * the caller exceeds its call rate or calls in flight (CallerLimiter) or already holds its share of
 * a batching queue while others wait (the batchers would refuse its items anyway, after the event
 * loop had paid for decoding a message of up to --max-message-bytes). Place it after the auth
 * interceptor, which names the caller's key. The refused call gets RESOURCE_EXHAUSTED; grpc-js then
 * never resumes its HTTP/2 stream, so the message is never decoded.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { keyNameOf } from '../auth/call-identity';
import type { Modality } from '../batching';
import { callerKeyOf, safePeer } from './call-context';
import type { CallerLimiter } from './admission-limiter';
import type { RefusalHolds } from './refusal-holds';
import type { RefusalLog } from './refusal-log';

export type AdmissionRefusal = 'caller_limit' | 'key_share';

/** How long a caller over its queue share is held before its refusal: about one batch of its items running. */
const SHARE_RETRY_MS = 100;

export interface AdmissionInterceptorOptions {
  limiter: CallerLimiter;
  /** Which methods are admitted here (those that queue work); others pass untouched. */
  applies: (path: string) => boolean;
  /** True when the caller already holds its share of the modality's queue while others wait (the batchers' rule). */
  overShare?: (callerKey: string, modality: Modality) => boolean;
  /** Counts a refusal (the rejection metric). */
  count?: (modality: Modality, reason: AdmissionRefusal) => void;
  log?: RefusalLog;
  /** Holds refusals back for a while (see RefusalHolds); without it they are sent at once. */
  holds?: RefusalHolds;
}

/**
 * The one queue a method's items go to, when it has one: EmbedText and EmbedImage. Other methods
 * (mixed inputs, streams) are checked against the rate and in-flight limits only.
 */
export function modalityOfMethod(path: string): Modality | undefined {
  if (path.endsWith('/EmbedText')) return 'text';
  if (path.endsWith('/EmbedImage')) return 'image';
  return undefined;
}

export function createAdmissionInterceptor(o: AdmissionInterceptorOptions): grpc.ServerInterceptor {
  return (descriptor, call) => {
    if (!o.applies(descriptor.path) || (o.limiter.unlimited && !o.overShare))
      return new grpc.ServerInterceptingCall(call);
    let release: (() => void) | undefined;
    let refused = false;
    let caller: string | undefined;
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            caller = callerKeyOf(keyNameOf(metadata), safePeer(call));
            const verdict = refusalOf(o, caller, modalityOfMethod(descriptor.path));
            if (verdict === undefined) {
              const admission = o.limiter.admit(caller, performance.now());
              if (admission.admitted) {
                release = admission.release;
                nextMetadata(metadata);
                return;
              }
              refused = true;
              release = refuse(o, call, descriptor.path, caller, 'caller_limit', admission.details, admission.retryMs);
              return;
            }
            refused = true;
            release = refuse(o, call, descriptor.path, caller, 'key_share', verdict, SHARE_RETRY_MS);
          },
          // The handler never started: whatever the client still sends goes nowhere.
          onReceiveMessage: (message, nextMessage) => {
            if (!refused) nextMessage(message);
          },
          onReceiveHalfClose: (nextHalfClose) => {
            if (!refused) nextHalfClose();
          },
          onCancel: () => release?.(),
        });
      },
      sendStatus: (status, next) => {
        release?.();
        // An admitted call the server found invalid spends the caller's invalid-call budget.
        if (!refused && caller !== undefined && status.code === grpc.status.INVALID_ARGUMENT)
          o.limiter.chargeInvalid(caller, performance.now());
        next(status);
      },
    });
  };
}

function refusalOf(o: AdmissionInterceptorOptions, caller: string, modality: Modality | undefined): string | undefined {
  if (modality === undefined || !o.overShare?.(caller, modality)) return undefined;
  return 'this caller already holds its share of the queue while other callers wait (--queue-caller-share); retry when its queued items have run';
}

/** Counts, logs and sends (or holds) the refusal; returns what cancels a held one. */
function refuse(
  o: AdmissionInterceptorOptions,
  call: grpc.ServerInterceptingCallInterface,
  path: string,
  caller: string,
  reason: AdmissionRefusal,
  details: string,
  holdMs: number,
): () => void {
  // The refused call's items are unknown (never decoded): it counts as one, under its method's
  // modality (text for the methods that mix both).
  o.count?.(modalityOfMethod(path) ?? 'text', reason);
  o.log?.refused(caller, reason, performance.now(), { method: path });
  const send = () => call.sendStatus({ code: grpc.status.RESOURCE_EXHAUSTED, details, metadata: new grpc.Metadata() });
  if (o.holds) return o.holds.hold(holdMs, send);
  send();
  return () => undefined;
}
