/**
 * The API-key check of the HTTP API: the same keys, the same `Authorization: Bearer <key>` header
 * and the same decision function as gRPC (auth/interceptor.ts checkCall), so a key works, or is
 * refused, the same way on both protocols. The embedding routes need the `embed` scope (what
 * EmbeddingService needs); the OpenAPI document is open when reflection is (--auth-open-reflection),
 * being the HTTP counterpart of a service description.
 */
import * as grpc from '@grpc/grpc-js';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { AUTHORIZATION_KEY, checkCall, type ApiKeyStore, type Requirement } from '../auth';
import { ApiError } from './errors';

export interface HttpAuthOptions {
  keys: () => ApiKeyStore;
  /** GET /openapi.json without a key. */
  openDocs: boolean;
  logger: Logger;
}

/** The API key each admitted request used (its caller identity for fair scheduling). */
const keyNames = new WeakMap<FastifyRequest, string>();

/** The name of the API key the request was admitted with; '' without keys. */
export function httpKeyNameOf(request: FastifyRequest): string {
  return keyNames.get(request) ?? '';
}

export const EMBED_REQUIREMENT: Requirement = { kind: 'scope', scope: 'embed' };
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** Throws ApiError 401/403 unless the request may proceed. */
export function checkRequest(request: FastifyRequest, requirement: Requirement, options: HttpAuthOptions): void {
  // checkCall reads gRPC metadata; an HTTP header list becomes one (node joins repeated
  // Authorization headers with ", ", which the Bearer syntax then refuses, as gRPC refuses two).
  const metadata = new grpc.Metadata();
  const header = request.headers.authorization;
  // HTTP allows bytes in a header that gRPC metadata refuses (non-ASCII): no Bearer key has them.
  if (header !== undefined && !PRINTABLE_ASCII.test(header))
    throw new ApiError(401, 'malformed authorization header: expected "Bearer <key>"', 'invalid_api_key');
  if (header !== undefined) metadata.add(AUTHORIZATION_KEY, header);
  const verdict = checkCall(metadata, requirement, options.keys());
  if (verdict.code === grpc.status.OK) {
    if (verdict.keyName !== undefined) keyNames.set(request, verdict.keyName);
    return;
  }
  options.logger.info(
    {
      route: request.routeOptions.url,
      peer: request.ip,
      code: grpc.status[verdict.code],
      reason: verdict.details,
      key: verdict.keyName,
    },
    'http request refused by API-key check',
  );
  throw verdict.code === grpc.status.PERMISSION_DENIED
    ? new ApiError(403, verdict.details, 'insufficient_permissions')
    : new ApiError(401, verdict.details, 'invalid_api_key');
}
