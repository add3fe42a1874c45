/**
 * `client.fineTunes`: datasets and fine-tune jobs (clipserve.v1.FineTuneService), and
 * `client.models`: the model versions a server knows and which one serves (ModelService).
 * Every method takes the usual call options (timeoutMs / deadline / signal).
 */
import { createReadStream } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { abortedError, linkAbort, resolveDeadline, unaryCall } from './call.js';
import { ClipServeError, invalidArgument, Status, toClipServeError } from './errors.js';
import type {
  ActivateModelResult,
  ByteSource,
  CreateFineTuneJobParams,
  CsvColumns,
  Dataset,
  DatasetPage,
  DatasetUpload,
  FineTuneEvent,
  FineTuneJob,
  FineTuneJobPage,
  ListDatasetsParams,
  ListFineTuneJobsParams,
  ModelList,
  UploadDatasetOptions,
  WatchFineTuneJobOptions,
} from './finetune-types.js';
import {
  datasetFormatToWire,
  datasetFromWire,
  eventFromWire,
  hyperparametersToWire,
  jobFromWire,
  modelVersionFromWire,
} from './finetune-wire.js';
import type { ActivateModelRequest } from './generated/wire/clipserve/v1/ActivateModelRequest.js';
import type { ActivateModelResponse__Output } from './generated/wire/clipserve/v1/ActivateModelResponse.js';
import type { CancelFineTuneJobRequest } from './generated/wire/clipserve/v1/CancelFineTuneJobRequest.js';
import type { CancelFineTuneJobResponse__Output } from './generated/wire/clipserve/v1/CancelFineTuneJobResponse.js';
import type { CreateFineTuneJobRequest } from './generated/wire/clipserve/v1/CreateFineTuneJobRequest.js';
import type { CreateFineTuneJobResponse__Output } from './generated/wire/clipserve/v1/CreateFineTuneJobResponse.js';
import type { Dataset__Output } from './generated/wire/clipserve/v1/Dataset.js';
import type { DeleteDatasetRequest } from './generated/wire/clipserve/v1/DeleteDatasetRequest.js';
import type { DeleteDatasetResponse__Output } from './generated/wire/clipserve/v1/DeleteDatasetResponse.js';
import type { GetFineTuneJobRequest } from './generated/wire/clipserve/v1/GetFineTuneJobRequest.js';
import type { GetFineTuneJobResponse__Output } from './generated/wire/clipserve/v1/GetFineTuneJobResponse.js';
import type { ListDatasetsRequest } from './generated/wire/clipserve/v1/ListDatasetsRequest.js';
import type { ListDatasetsResponse__Output } from './generated/wire/clipserve/v1/ListDatasetsResponse.js';
import type { ListFineTuneJobsRequest } from './generated/wire/clipserve/v1/ListFineTuneJobsRequest.js';
import type { ListFineTuneJobsResponse__Output } from './generated/wire/clipserve/v1/ListFineTuneJobsResponse.js';
import type { ListModelsRequest } from './generated/wire/clipserve/v1/ListModelsRequest.js';
import type { ListModelsResponse__Output } from './generated/wire/clipserve/v1/ListModelsResponse.js';
import type { UploadDatasetRequest } from './generated/wire/clipserve/v1/UploadDatasetRequest.js';
import type { UploadDatasetResponse__Output } from './generated/wire/clipserve/v1/UploadDatasetResponse.js';
import type { WatchFineTuneJobRequest } from './generated/wire/clipserve/v1/WatchFineTuneJobRequest.js';
import type { WatchFineTuneJobResponse__Output } from './generated/wire/clipserve/v1/WatchFineTuneJobResponse.js';
import { imageBytes } from './inputs.js';
import type { RetryOptions } from './channel.js';
import type { CallOptions } from './types.js';

/** What the client shares with its service namespaces. */
export interface ServiceContext {
  client: grpc.Client;
  metadata(): grpc.Metadata;
  defaultTimeoutMs: number;
  /** Largest message the channel sends. */
  maxSendBytes: number;
  /** The client's retry settings; `watch` uses them to reconnect. */
  retry: RetryOptions | false | undefined;
}

const DEFAULT_CHUNK_BYTES = 1 << 20;
/** Room in each upload message for the fields around the bytes. */
const MESSAGE_HEADROOM_BYTES = 4096;

type UploadCall = grpc.ClientWritableStream<UploadDatasetRequest>;

function nonEmptyString(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw invalidArgument(`${what} must be a non-empty string`);
  return v;
}

/** Yields the bytes of `source` in chunks of at most `size` bytes. */
async function* chunksOf(source: ByteSource, size: number): AsyncGenerator<Buffer> {
  if (typeof source === 'string') {
    const stream = createReadStream(source, { highWaterMark: size });
    try {
      for await (const c of stream) yield c as Buffer;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ClipServeError({
        code: code === 'ENOENT' ? Status.NOT_FOUND : Status.INVALID_ARGUMENT,
        details: `cannot read ${source}: ${(err as Error).message}`,
        cause: err,
      });
    }
    return;
  }
  if (source instanceof Uint8Array) {
    const buf = Buffer.isBuffer(source) ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
    for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    return;
  }
  if (
    source &&
    (typeof (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === 'function' ||
      typeof (source as Iterable<Uint8Array>)[Symbol.iterator] === 'function')
  ) {
    for await (const piece of source as AsyncIterable<Uint8Array>) {
      if (!(piece instanceof Uint8Array))
        throw invalidArgument('a byte stream must yield Buffers or Uint8Arrays (open files without an encoding)');
      const buf = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    }
    return;
  }
  throw invalidArgument('zip / csv must be a file path, a Buffer, a Uint8Array or an (async) iterable of byte chunks');
}

function columnsHeader(columns: CsvColumns | undefined): {
  csvImgKey: string;
  csvCaptionKey: string;
  csvSeparator: string;
} {
  const c = columns ?? {};
  for (const [k, v] of Object.entries(c))
    if (v !== undefined && typeof v !== 'string') throw invalidArgument(`columns.${k} must be a string`);
  if (c.separator !== undefined && [...c.separator].length !== 1)
    throw invalidArgument('columns.separator must be one character');
  return { csvImgKey: c.imgKey ?? '', csvCaptionKey: c.captionKey ?? '', csvSeparator: c.separator ?? '' };
}

/** Waits `ms`, or rejects with CANCELLED when the signal aborts first. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortedError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Every item of a paged list, page after page until a page has no next token. */
async function* allPages<T>(
  page: (pageToken: string | undefined) => Promise<{ items: T[]; nextPageToken?: string }>,
): AsyncGenerator<T> {
  let pageToken: string | undefined;
  do {
    const p = await page(pageToken);
    yield* p.items;
    pageToken = p.nextPageToken;
  } while (pageToken);
}

export class FineTunes {
  constructor(private readonly ctx: ServiceContext) {}

  private unary<Req, Res>(method: string, request: Req, opts: CallOptions): Promise<Res> {
    return unaryCall<Req, Res>(
      this.ctx.client,
      method,
      request,
      this.ctx.metadata(),
      resolveDeadline(opts, this.ctx.defaultTimeoutMs),
      opts.signal,
    );
  }

  /**
   * Uploads a dataset in one client-streaming call: the header, then each pair (or chunk) as it is
   * read, waiting whenever the channel's send buffer is full, so a dataset of any size is never
   * held in memory at once. No default deadline (an upload takes as long as it takes); give
   * `timeoutMs` / `deadline` to bound it. Never retried.
   */
  async uploadDataset(upload: DatasetUpload, opts: UploadDatasetOptions = {}): Promise<Dataset> {
    if (upload === null || typeof upload !== 'object')
      throw invalidArgument('uploadDataset expects { pairs }, { zip } or { csv }');
    const kinds = (['pairs', 'zip', 'csv'] as const).filter(
      (k) => k in upload && (upload as Record<string, unknown>)[k] !== undefined,
    );
    if (kinds.length !== 1) throw invalidArgument('uploadDataset expects exactly one of pairs, zip and csv');
    const kind = kinds[0];
    const name = upload.name ?? '';
    if (typeof name !== 'string') throw invalidArgument('name must be a string');
    const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    if (!Number.isInteger(chunkBytes) || chunkBytes < 1) throw new RangeError('chunkBytes must be an integer >= 1');
    const maxChunk = Math.min(chunkBytes, this.ctx.maxSendBytes - MESSAGE_HEADROOM_BYTES);
    const columns =
      kind === 'pairs' ? columnsHeader(undefined) : columnsHeader((upload as { columns?: CsvColumns }).columns);
    const { signal } = opts;
    if (signal?.aborted) throw abortedError(signal);

    let call: UploadCall | undefined;
    const result = new Promise<Dataset__Output | null>((resolve, reject) => {
      call = (
        this.ctx.client as unknown as {
          UploadDataset(
            md: grpc.Metadata,
            o: grpc.CallOptions,
            cb: (err: grpc.ServiceError | null, res?: UploadDatasetResponse__Output) => void,
          ): UploadCall;
        }
      ).UploadDataset(
        this.ctx.metadata(),
        (() => {
          const deadline = resolveDeadline(opts, undefined);
          return deadline ? { deadline } : {};
        })(),
        (err, res) => {
          if (err)
            reject(signal?.aborted && err.code === Status.CANCELLED ? abortedError(signal) : toClipServeError(err));
          else resolve(res!.dataset);
        },
      );
    });
    // The call may end (rejected by the server, cancelled) while messages are still being written.
    let settled = false;
    result.then(
      () => (settled = true),
      () => (settled = true),
    );
    const detach = linkAbort(signal, call!);
    const send = async (msg: UploadDatasetRequest): Promise<void> => {
      if (settled) return;
      if (!call!.write(msg)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            call!.off('drain', done);
            resolve();
          };
          call!.on('drain', done);
          result.then(done, done);
        });
      }
    };

    let messages = 0;
    let bytes = 0;
    try {
      await send({ header: { name, format: datasetFormatToWire(kind), ...columns } });
      if (kind === 'pairs') {
        const pairs = (upload as { pairs: Iterable<unknown> | AsyncIterable<unknown> }).pairs;
        if (
          !pairs ||
          (typeof (pairs as AsyncIterable<unknown>)[Symbol.asyncIterator] !== 'function' &&
            typeof (pairs as Iterable<unknown>)[Symbol.iterator] !== 'function')
        ) {
          throw invalidArgument('pairs must be an (async) iterable of { image, caption }');
        }
        let i = 0;
        for await (const p of pairs as AsyncIterable<{ image: unknown; caption: unknown }>) {
          if (settled) break;
          if (!p || typeof p !== 'object' || typeof p.caption !== 'string')
            throw invalidArgument('each pair must be { image, caption } with a string caption', i);
          const image = await imageBytes(p.image as Buffer, i);
          await send({ pair: { image, caption: p.caption } });
          messages++;
          bytes += image.length;
          opts.onProgress?.({ messages, bytes });
          i++;
        }
      } else {
        for await (const chunk of chunksOf((upload as Record<string, ByteSource>)[kind], maxChunk)) {
          if (settled) break;
          await send({ chunk });
          messages++;
          bytes += chunk.length;
          opts.onProgress?.({ messages, bytes });
        }
      }
      if (!settled) call!.end();
    } catch (err) {
      // A local failure (unreadable file, bad pair): the server must not keep a half upload.
      call!.cancel();
      await result.catch(() => undefined);
      detach();
      throw err instanceof ClipServeError ? err : toClipServeError(err);
    }
    try {
      return datasetFromWire(await result);
    } finally {
      detach();
    }
  }

  /** One page of the caller's datasets, newest first. */
  async listDatasets(params: ListDatasetsParams = {}, opts: CallOptions = {}): Promise<DatasetPage> {
    const pageSize = params.pageSize ?? 0;
    if (!Number.isInteger(pageSize) || pageSize < 0) throw new RangeError('pageSize must be an integer >= 0');
    const res = await this.unary<ListDatasetsRequest, ListDatasetsResponse__Output>(
      'ListDatasets',
      { pageSize, pageToken: params.pageToken ?? '' },
      opts,
    );
    return {
      datasets: res.datasets.map(datasetFromWire),
      ...(res.nextPageToken ? { nextPageToken: res.nextPageToken } : {}),
    };
  }

  /** Every dataset of the caller, newest first, page by page (each page is one call with `opts`). */
  listAllDatasets(params: Omit<ListDatasetsParams, 'pageToken'> = {}, opts: CallOptions = {}): AsyncGenerator<Dataset> {
    return allPages(async (pageToken) => {
      const page = await this.listDatasets({ ...params, pageToken }, opts);
      return { items: page.datasets, nextPageToken: page.nextPageToken };
    });
  }

  /**
   * Deletes one of the caller's datasets and its files; resolves with the dataset as it was.
   * FAILED_PRECONDITION while an unfinished job reads it.
   */
  async deleteDataset(datasetId: string, opts: CallOptions = {}): Promise<Dataset> {
    const res = await this.unary<DeleteDatasetRequest, DeleteDatasetResponse__Output>(
      'DeleteDataset',
      { datasetId: nonEmptyString(datasetId, 'datasetId') },
      opts,
    );
    return datasetFromWire(res.dataset);
  }

  /** Creates a job (state 'queued'); the server runs jobs one at a time in creation order. */
  async create(params: CreateFineTuneJobParams, opts: CallOptions = {}): Promise<FineTuneJob> {
    if (params === null || typeof params !== 'object') throw invalidArgument('create expects { trainingFile, ... }');
    const request: CreateFineTuneJobRequest = {
      trainingFile: nonEmptyString(params.trainingFile, 'trainingFile'),
      validationFile: params.validationFile ?? '',
      method: params.method ?? '',
      baseModel: params.baseModel ?? '',
      hyperparameters: hyperparametersToWire(params.hyperparameters),
      suffix: params.suffix ?? '',
    };
    const res = await this.unary<CreateFineTuneJobRequest, CreateFineTuneJobResponse__Output>(
      'CreateFineTuneJob',
      request,
      opts,
    );
    return jobFromWire(res.job);
  }

  async get(jobId: string, opts: CallOptions = {}): Promise<FineTuneJob> {
    const res = await this.unary<GetFineTuneJobRequest, GetFineTuneJobResponse__Output>(
      'GetFineTuneJob',
      { jobId: nonEmptyString(jobId, 'jobId') },
      opts,
    );
    return jobFromWire(res.job);
  }

  /** One page of jobs, newest first. */
  async list(params: ListFineTuneJobsParams = {}, opts: CallOptions = {}): Promise<FineTuneJobPage> {
    const pageSize = params.pageSize ?? 0;
    if (!Number.isInteger(pageSize) || pageSize < 0) throw new RangeError('pageSize must be an integer >= 0');
    const res = await this.unary<ListFineTuneJobsRequest, ListFineTuneJobsResponse__Output>(
      'ListFineTuneJobs',
      { pageSize, pageToken: params.pageToken ?? '' },
      opts,
    );
    return { jobs: res.jobs.map(jobFromWire), ...(res.nextPageToken ? { nextPageToken: res.nextPageToken } : {}) };
  }

  /** Every job, newest first, page by page (each page is one call with `opts`). */
  listAll(params: Omit<ListFineTuneJobsParams, 'pageToken'> = {}, opts: CallOptions = {}): AsyncGenerator<FineTuneJob> {
    return allPages(async (pageToken) => {
      const page = await this.list({ ...params, pageToken }, opts);
      return { items: page.jobs, nextPageToken: page.nextPageToken };
    });
  }

  /** Cancels a queued or running job (a running one stops within seconds). */
  async cancel(jobId: string, opts: CallOptions = {}): Promise<FineTuneJob> {
    const res = await this.unary<CancelFineTuneJobRequest, CancelFineTuneJobResponse__Output>(
      'CancelFineTuneJob',
      { jobId: nonEmptyString(jobId, 'jobId') },
      opts,
    );
    return jobFromWire(res.job);
  }

  /**
   * The job's events from `afterSequence` on, then live ones until the job ends (the iteration
   * then finishes). Breaking out of the loop, or aborting the signal, cancels the call. No default
   * deadline: a job may run for hours; `timeoutMs` / `deadline` bound the whole watch.
   *
   * A dropped connection (UNAVAILABLE: a server restart, a lost pod) is re-established with the
   * client's retry backoff, from the last event delivered, so the caller sees every event once, in
   * order; only when the retry attempts run out does the error surface.
   */
  async *watch(jobId: string, opts: WatchFineTuneJobOptions = {}): AsyncGenerator<FineTuneEvent> {
    const id = nonEmptyString(jobId, 'jobId');
    let after = opts.afterSequence ?? 0;
    if (!Number.isInteger(after) || after < 0) throw new RangeError('afterSequence must be an integer >= 0');
    const { signal } = opts;
    if (signal?.aborted) throw abortedError(signal);
    const deadline = resolveDeadline(opts, undefined);
    const retry =
      this.ctx.retry === false
        ? undefined
        : { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 5000, backoffMultiplier: 2, ...this.ctx.retry };
    let failures = 0;
    for (;;) {
      const call = (
        this.ctx.client as unknown as {
          WatchFineTuneJob(
            req: WatchFineTuneJobRequest,
            md: grpc.Metadata,
            o: grpc.CallOptions,
          ): grpc.ClientReadableStream<WatchFineTuneJobResponse__Output>;
        }
      ).WatchFineTuneJob({ jobId: id, afterSequence: after }, this.ctx.metadata(), deadline ? { deadline } : {});
      const detach = linkAbort(signal, call);
      let failure: ClipServeError | undefined;
      try {
        for await (const msg of call as AsyncIterable<WatchFineTuneJobResponse__Output>) {
          const event = eventFromWire(msg.event, msg.state);
          failures = 0;
          after = event.sequence;
          yield event;
        }
        return;
      } catch (err) {
        if (signal?.aborted) throw abortedError(signal);
        failure = toClipServeError(err);
      } finally {
        detach();
        call.cancel();
      }
      failures++;
      if (failure.code !== Status.UNAVAILABLE || !retry || failures >= retry.maxAttempts) throw failure;
      const backoff =
        Math.min(retry.initialBackoffMs * retry.backoffMultiplier ** (failures - 1), retry.maxBackoffMs) *
        (0.8 + 0.4 * Math.random());
      if (deadline && Date.now() + backoff >= deadline.getTime()) throw failure;
      await pause(backoff, signal);
    }
  }
}

export class Models {
  constructor(private readonly ctx: ServiceContext) {}

  /** Every version the server knows (its configured model and fine-tuned ones), newest first. */
  async list(opts: CallOptions = {}): Promise<ModelList> {
    const res = await unaryCall<ListModelsRequest, ListModelsResponse__Output>(
      this.ctx.client,
      'ListModels',
      {},
      this.ctx.metadata(),
      resolveDeadline(opts, this.ctx.defaultTimeoutMs),
      opts.signal,
    );
    return {
      models: res.models.map(modelVersionFromWire),
      activeVersion: res.activeVersion,
      loadedVersions: [...(res.loadedVersions ?? [])],
    };
  }

  /**
   * Makes `version` the serving model: the server loads and warms it, then swaps atomically. If it
   * fails to load, the old version keeps serving and this rejects with FAILED_PRECONDITION. The
   * previous version stays available to calls that pin it (see VersionOptions.modelVersion).
   */
  async activate(version: string, opts: CallOptions = {}): Promise<ActivateModelResult> {
    const res = await unaryCall<ActivateModelRequest, ActivateModelResponse__Output>(
      this.ctx.client,
      'ActivateModel',
      { version: nonEmptyString(version, 'version') },
      this.ctx.metadata(),
      resolveDeadline(opts, this.ctx.defaultTimeoutMs),
      opts.signal,
    );
    return { model: modelVersionFromWire(res.model), previousVersion: res.previousVersion };
  }
}
