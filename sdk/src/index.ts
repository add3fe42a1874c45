/** @clipserve/sdk — client for the clipserve OpenCLIP embedding service. */
export { ClipClient, type ClipClientOptions } from './client.js';
export { ClipServeError, Status, type StatusCode, type ClipServeErrorInit } from './errors.js';
export type { TlsOptions, KeepaliveOptions, RetryOptions } from './channel.js';
export { cosine } from './vectors.js';
export type * from './types.js';
export { FineTunes, Models } from './fine-tunes.js';
export type * from './finetune-types.js';
