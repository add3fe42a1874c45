/** What the HTTP API needs from the server: the same model resolution, gate, limits and keys as gRPC. */
import type { Logger } from 'pino';
import type { ApiKeyStore } from '../auth';
import type { CallGate } from '../grpc/call-context';
import type { ModelResolver } from '../grpc/model-resolver';
import type { EmbedderPort } from '../grpc/request-work';
import type { RequestLimits } from '../grpc/validate';
import type { HttpApiMetrics } from '../metrics/http-api-metrics';
import type { ServedModelInfo } from '../inference/model-port';

/** A served model version and the batchers that embed with it. */
export interface ServedModel {
  info: ServedModelInfo;
  embedder: EmbedderPort;
}

export interface HttpApiDeps {
  /** The served versions: `acquire` is the resolver gRPC uses for model_version (inference/model-host.ts). */
  models: ModelResolver;
  /** Loaded versions, each with the epoch milliseconds it began serving (GET /v1/models). */
  servedModels: () => { info: ServedModelInfo; since: number }[];
  limits: RequestLimits;
  gate: CallGate;
  logger: Logger;
  /** API keys, when the server requires them. */
  auth?: { keys: () => ApiKeyStore; openDocs: boolean };
  metrics?: HttpApiMetrics;
}
