/**
 * GET /v1/models and GET /v1/models/{model}: the served versions in OpenAI's model-list shape, plus
 * what a client needs to use one (dimensions, context length, image size, modalities). A model's
 * id is its version: the value POST /v1/embeddings takes as `model`, resolved as gRPC resolves
 * model_version.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { ServedModelInfo } from '../../inference/model-port';
import { EMBED_REQUIREMENT } from '../auth';
import { withCall } from '../call';
import type { HttpApiDeps } from '../deps';
import { errorResponses, ModelList, ModelObject, type ModelObjectValue } from '../schemas';
import { withServedModel } from './embeddings';

export function registerModels(app: FastifyInstance, deps: HttpApiDeps): void {
  const config = { requirement: EMBED_REQUIREMENT };
  app.get(
    '/v1/models',
    {
      config,
      schema: {
        summary: 'List the served model versions',
        response: { 200: ModelList, ...errorResponses(401, 403, 503) },
      },
    },
    async (request, reply) =>
      withCall(deps.gate, deps.logger, request, reply, async () => ({
        object: 'list' as const,
        data: deps.servedModels().map(({ info, since }) => modelObject(info, since)),
      })),
  );
  app.get<{ Params: { model: string } }>(
    '/v1/models/:model',
    {
      config,
      schema: {
        summary: 'Describe one served model version',
        params: Type.Object({ model: Type.String() }),
        response: { 200: ModelObject, ...errorResponses(401, 403, 404, 503) },
      },
    },
    async (request, reply) =>
      withCall(deps.gate, deps.logger, request, reply, async () => {
        const info = await withServedModel(deps, request.params.model, async (served) => served.info);
        const since = deps.servedModels().find((m) => m.info.version === info.version)?.since ?? Date.now();
        return modelObject(info, since);
      }),
  );
}

function modelObject(info: ServedModelInfo, since: number): ModelObjectValue {
  return {
    id: info.version,
    object: 'model',
    created: Math.floor(since / 1000),
    owned_by: 'clipserve',
    name: info.name,
    dimensions: info.embedDim,
    context_length: info.contextLength,
    image_size: info.imageSize,
    modalities: ['text', 'image'],
    demo: info.demo,
  };
}
