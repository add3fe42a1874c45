/**
 * clipserve.v1.FineTuneService handlers: thin adapters over the dataset catalogue and the job
 * runner (server/src/finetune), which own the rules. The two streams have their own files
 * (upload-dataset.ts, watch-finetune-job.ts); the unary calls are the few lines here.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { DatasetCatalog } from '../finetune/dataset';
import type { FineTuneJobRunner } from '../finetune/jobs';
import { CallGate, unaryHandler, type CallContext } from './call-context';
import { mapped } from './finetune-errors';
import { datasetToMessage, hyperparametersFromMessage, jobToMessage } from './finetune-messages';
import { uploadDatasetHandler } from './upload-dataset';
import { watchFineTuneJobHandler } from './watch-finetune-job';
import type { CancelFineTuneJobRequest__Output } from './generated/clipserve/v1/CancelFineTuneJobRequest';
import type { CancelFineTuneJobResponse } from './generated/clipserve/v1/CancelFineTuneJobResponse';
import type { CreateFineTuneJobRequest__Output } from './generated/clipserve/v1/CreateFineTuneJobRequest';
import type { CreateFineTuneJobResponse } from './generated/clipserve/v1/CreateFineTuneJobResponse';
import type { DeleteDatasetRequest__Output } from './generated/clipserve/v1/DeleteDatasetRequest';
import type { DeleteDatasetResponse } from './generated/clipserve/v1/DeleteDatasetResponse';
import type { GetFineTuneJobRequest__Output } from './generated/clipserve/v1/GetFineTuneJobRequest';
import type { GetFineTuneJobResponse } from './generated/clipserve/v1/GetFineTuneJobResponse';
import type { ListDatasetsRequest__Output } from './generated/clipserve/v1/ListDatasetsRequest';
import type { ListDatasetsResponse } from './generated/clipserve/v1/ListDatasetsResponse';
import type { ListFineTuneJobsRequest__Output } from './generated/clipserve/v1/ListFineTuneJobsRequest';
import type { ListFineTuneJobsResponse } from './generated/clipserve/v1/ListFineTuneJobsResponse';

export interface FineTuneServiceDeps {
  runner: FineTuneJobRunner;
  catalog: DatasetCatalog;
  gate: CallGate;
  logger: Logger;
}

export function fineTuneServiceHandlers(deps: FineTuneServiceDeps): grpc.UntypedServiceImplementation {
  const { runner, catalog, gate, logger } = deps;
  const unary = <Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) =>
    unaryHandler<Req, Res>(method, gate, logger, (req, ctx) => mapped(() => fn(req, ctx)));

  return {
    UploadDataset: uploadDatasetHandler(deps),
    CreateFineTuneJob: unary<CreateFineTuneJobRequest__Output, CreateFineTuneJobResponse>(
      'CreateFineTuneJob',
      async (req, ctx) => {
        const job = await runner.create({
          trainingFile: String(req.trainingFile ?? ''),
          validationFile: String(req.validationFile ?? ''),
          method: String(req.method ?? ''),
          baseModel: String(req.baseModel ?? ''),
          hyperparameters: hyperparametersFromMessage(req.hyperparameters),
          suffix: String(req.suffix ?? ''),
          owner: ctx.keyName,
        });
        return { job: jobToMessage(job) };
      },
    ),
    GetFineTuneJob: unary<GetFineTuneJobRequest__Output, GetFineTuneJobResponse>('GetFineTuneJob', async (req) => ({
      job: jobToMessage(await runner.get(String(req.jobId ?? ''))),
    })),
    ListFineTuneJobs: unary<ListFineTuneJobsRequest__Output, ListFineTuneJobsResponse>(
      'ListFineTuneJobs',
      async (req) => {
        const { jobs, nextPageToken } = await runner.list(Number(req.pageSize ?? 0), String(req.pageToken ?? ''));
        return { jobs: jobs.map(jobToMessage), nextPageToken };
      },
    ),
    CancelFineTuneJob: unary<CancelFineTuneJobRequest__Output, CancelFineTuneJobResponse>(
      'CancelFineTuneJob',
      async (req) => ({ job: jobToMessage(await runner.cancel(String(req.jobId ?? ''))) }),
    ),
    WatchFineTuneJob: watchFineTuneJobHandler(deps),
    ListDatasets: unary<ListDatasetsRequest__Output, ListDatasetsResponse>('ListDatasets', async (req, ctx) => {
      const { datasets, nextPageToken } = await catalog.list(
        ctx.keyName,
        Number(req.pageSize ?? 0),
        String(req.pageToken ?? ''),
      );
      return { datasets: datasets.map(datasetToMessage), nextPageToken };
    }),
    DeleteDataset: unary<DeleteDatasetRequest__Output, DeleteDatasetResponse>('DeleteDataset', async (req, ctx) => ({
      dataset: datasetToMessage(await catalog.delete(String(req.datasetId ?? ''), ctx.keyName)),
    })),
  };
}
