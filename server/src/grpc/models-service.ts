/** clipserve.v1.ModelService handlers: the registry's versions, which are loaded, and hot-swap activation. */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ModelVersions } from '../versions/model-versions';
import { CallGate, unaryHandler } from './call-context';
import { mapped } from './finetune-errors';
import { modelVersionToMessage } from './finetune-messages';
import { invalidArgument } from './status';
import type { ActivateModelRequest__Output } from './generated/clipserve/v1/ActivateModelRequest';
import type { ActivateModelResponse } from './generated/clipserve/v1/ActivateModelResponse';
import type { ListModelsRequest__Output } from './generated/clipserve/v1/ListModelsRequest';
import type { ListModelsResponse } from './generated/clipserve/v1/ListModelsResponse';

export interface ModelServiceDeps {
  /** The registry's versions and the hot-swap host, with the activation policy (versions/model-versions.ts). */
  versions: Pick<ModelVersions, 'list' | 'activate'>;
  gate: CallGate;
  logger: Logger;
}

export function modelServiceHandlers(deps: ModelServiceDeps): grpc.UntypedServiceImplementation {
  const { versions, gate, logger } = deps;
  const unary = <Req, Res>(method: string, fn: (req: Req) => Promise<Res>) =>
    unaryHandler<Req, Res>(method, gate, logger, (req) => mapped(() => fn(req)));
  return {
    ListModels: unary<ListModelsRequest__Output, ListModelsResponse>('ListModels', async () => {
      const { models, activeVersion, loadedVersions } = await versions.list();
      return {
        models: models.map((v) => modelVersionToMessage(v, activeVersion, loadedVersions)),
        activeVersion,
        loadedVersions,
      };
    }),
    ActivateModel: unary<ActivateModelRequest__Output, ActivateModelResponse>('ActivateModel', async (req) => {
      const version = String(req.version ?? '');
      if (!version) throw invalidArgument('version is required');
      const { record, previousVersion, loadedVersions } = await versions.activate(version);
      return { model: modelVersionToMessage(record, version, loadedVersions), previousVersion };
    }),
  };
}
