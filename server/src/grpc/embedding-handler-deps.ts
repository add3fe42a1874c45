/**
 * What every EmbeddingService handler file shares: the served versions, the request limits, and
 * `unary`, the call-context wrapper (gate admission, context, error → status) bound to the
 * service's gate and logger.
 */
import type * as grpc from '@grpc/grpc-js';
import type { CallContext } from './call-context';
import type { ModelResolver } from './model-resolver';
import type { RequestLimits } from './validate';

export interface EmbeddingHandlerDeps {
  models: ModelResolver;
  limits: RequestLimits;
  unary<Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>): grpc.handleUnaryCall<Req, Res>;
}
