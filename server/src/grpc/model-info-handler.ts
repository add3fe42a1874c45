/** GetModelInfo: the requested (or active) version's model, the limits in force, and which versions are loaded. */
import type * as grpc from '@grpc/grpc-js';
import type { EmbeddingHandlerDeps } from './embedding-handler-deps';
import type * as m from './messages';
import { withModel } from './model-resolver';
import { checkModelVersion } from './validate';

export function getModelInfoHandler({
  models,
  limits,
  unary,
}: EmbeddingHandlerDeps): grpc.handleUnaryCall<m.GetModelInfoRequest, m.GetModelInfoResponse> {
  return unary<m.GetModelInfoRequest, m.GetModelInfoResponse>('GetModelInfo', async (req) => {
    checkModelVersion(req.modelVersion ?? '');
    const info = await withModel(models, req.modelVersion ?? '', async (lease) => lease.info);
    const loaded = models.loadedVersions();
    return {
      name: info.name,
      version: info.version,
      embedDim: info.embedDim,
      imageSize: info.imageSize,
      contextLength: info.contextLength,
      logitScale: info.logitScale,
      provider: info.provider,
      demo: info.demo,
      precision: info.precision,
      limits: { ...limits },
      activeVersion: loaded.find((v) => v.active)?.version ?? '',
      loadedVersions: loaded.map((v) => v.version),
    };
  });
}
