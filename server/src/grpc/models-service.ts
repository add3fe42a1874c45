/** clipserve.v1.ModelService handlers: the registry's versions, which are loaded, and hot-swap activation. */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ServedModelInfo } from '../serve/model-port';
import type { ModelRegistry } from '../models/registry';
import { CallGate, unaryHandler } from './call-context';
import { mapped } from './finetune-errors';
import { modelVersionToMessage } from './finetune-messages';
import { invalidArgument } from './status';
import type { ActivateModelRequest__Output } from './generated/clipserve/v1/ActivateModelRequest';
import type { ActivateModelResponse } from './generated/clipserve/v1/ActivateModelResponse';
import type { ListModelsRequest__Output } from './generated/clipserve/v1/ListModelsRequest';
import type { ListModelsResponse } from './generated/clipserve/v1/ListModelsResponse';

export interface ModelServiceDeps {
  registry: ModelRegistry;
  /** The hot-swap host (server/src/models/host.ts ModelHost). */
  host: { info(): ServedModelInfo; activate(version: string): Promise<unknown>; loadedVersions(): { version: string }[] };
  gate: CallGate;
  logger: Logger;
}

export function modelServiceHandlers(deps: ModelServiceDeps): grpc.UntypedServiceImplementation {
  const { registry, host, gate, logger } = deps;
  const unary = <Req, Res>(method: string, fn: (req: Req) => Promise<Res>) => unaryHandler<Req, Res>(method, gate, logger, (req) => mapped(() => fn(req)));
  return {
    ListModels: unary<ListModelsRequest__Output, ListModelsResponse>('ListModels', async () => {
      const active = host.info().version;
      const loaded = host.loadedVersions().map((v) => v.version);
      return { models: (await registry.list()).map((v) => modelVersionToMessage(v, active, loaded)), activeVersion: active, loadedVersions: loaded };
    }),
    ActivateModel: unary<ActivateModelRequest__Output, ActivateModelResponse>('ActivateModel', async (req) => {
      const version = String(req.version ?? '');
      if (!version) throw invalidArgument('version is required');
      const record = await registry.get(version);
      const previous = host.info().version;
      if (previous !== version) {
        await host.activate(version);
        logger.info({ version, previous }, 'model activated');
      }
      await registry.setActive(version);
      return { model: modelVersionToMessage(record, version, host.loadedVersions().map((v) => v.version)), previousVersion: previous };
    }),
  };
}
