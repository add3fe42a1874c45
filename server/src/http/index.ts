/** The OpenAI-compatible HTTP API (POST /v1/embeddings, GET /v1/models, GET /openapi.json). */
export { buildHttpApp, OPENAPI_PATH } from './app';
export type { HttpApiDeps, ServedModel } from './deps';
export { startHttpApi } from './server';
export type { HttpApiOptions, RunningHttpApi } from './server';
