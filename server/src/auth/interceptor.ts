/**
 * The API-key check as a grpc-js server interceptor. Place it AFTER the metrics interceptor, so
 * refused calls are counted and logged with their code like any other.
 *
 * It reads `authorization: Bearer <key>` from the call's metadata before the handler sees the call:
 * no or an unknown key → UNAUTHENTICATED, a key without the scope the service needs →
 * PERMISSION_DENIED; the handler is then never started and any request messages are dropped. The
 * authorization header is removed from the metadata handlers receive, so no handler can log it.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { rememberKeyName } from './call-identity';
import type { ApiKeyStore } from './key-store';
import { AuthPolicy, Requirement } from './policy';
import { grants } from './scopes';

export const AUTHORIZATION_KEY = 'authorization';
/** RFC 6750 §2.1: the scheme is case-insensitive, then one or more spaces, then the b64token. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

export interface AuthInterceptorOptions {
  /** The keys in force, read per call (so a reloaded key list applies to the next call). */
  keys: () => ApiKeyStore;
  /** When it returns a reason, every call that needs a key is refused with UNAVAILABLE (key file broken, deny policy). */
  refusal?: () => string | undefined;
  policy: AuthPolicy;
  logger?: Logger;
}

export interface AuthVerdict {
  code: grpc.status;
  /** Client-facing reason; never quotes what the client sent. */
  details: string;
  /** Key name when a key was recognised (for logs). */
  keyName?: string;
}

/** Decides a call from its metadata; OK means it may proceed. */
export function checkCall(metadata: grpc.Metadata, requirement: Requirement, keys: ApiKeyStore): AuthVerdict {
  if (requirement.kind === 'open') return { code: grpc.status.OK, details: '' };
  const values = metadata.get(AUTHORIZATION_KEY);
  if (values.length === 0)
    return { code: grpc.status.UNAUTHENTICATED, details: 'missing API key: send "authorization: Bearer <key>"' };
  if (values.length > 1) return { code: grpc.status.UNAUTHENTICATED, details: 'more than one authorization header' };
  const value = values[0];
  const match = typeof value === 'string' ? BEARER.exec(value) : null;
  if (!match)
    return { code: grpc.status.UNAUTHENTICATED, details: 'malformed authorization header: expected "Bearer <key>"' };
  const identity = keys.authenticate(match[1]);
  if (!identity) return { code: grpc.status.UNAUTHENTICATED, details: 'invalid API key' };
  if (requirement.kind === 'scope' && !grants(identity.scopes, requirement.scope)) {
    return {
      code: grpc.status.PERMISSION_DENIED,
      details: `API key "${identity.name}" lacks the "${requirement.scope}" scope`,
      keyName: identity.name,
    };
  }
  return { code: grpc.status.OK, details: '', keyName: identity.name };
}

export function createAuthInterceptor(options: AuthInterceptorOptions): grpc.ServerInterceptor {
  return (descriptor, call) => {
    const requirement = options.policy.requirement(descriptor.path);
    if (requirement.kind === 'open') return new grpc.ServerInterceptingCall(call);
    let refused = false;
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const refusal = options.refusal?.();
            const verdict: AuthVerdict =
              refusal !== undefined
                ? { code: grpc.status.UNAVAILABLE, details: refusal }
                : checkCall(metadata, requirement, options.keys());
            metadata.remove(AUTHORIZATION_KEY);
            if (verdict.code === grpc.status.OK) {
              if (verdict.keyName !== undefined) rememberKeyName(metadata, verdict.keyName);
              nextMetadata(metadata);
              return;
            }
            refused = true;
            options.logger?.info(
              {
                method: descriptor.path,
                peer: call.getPeer(),
                code: grpc.status[verdict.code],
                reason: verdict.details,
                key: verdict.keyName,
              },
              'call refused by API-key check',
            );
            call.sendStatus({ code: verdict.code, details: verdict.details, metadata: new grpc.Metadata() });
          },
          // A refused call's handler never started: whatever the client still sends goes nowhere.
          onReceiveMessage: (message, nextMessage) => {
            if (!refused) nextMessage(message);
          },
          onReceiveHalfClose: (nextHalfClose) => {
            if (!refused) nextHalfClose();
          },
        });
      },
    });
  };
}
