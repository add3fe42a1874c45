/**
 * clipserve.v1.FineTuneService handlers: thin adapters over the dataset catalogue and the job
 * runner (server/src/finetune), which own the rules.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DatasetError, type DatasetCatalog, type DatasetUpload } from '../finetune/dataset';
import type { FineTuneJobRunner } from '../finetune/jobs';
import { TERMINAL_STATES, type JobEventRecord, type JobState } from '../store/store';
import { callContext, CallGate, unaryHandler, type CallContext } from './call-context';
import { mapped, fineTuneRpcError } from './finetune-errors';
import { datasetFormatFromMessage, datasetToMessage, eventToMessage, hyperparametersFromMessage, jobStateName, jobToMessage } from './finetune-messages';
import { invalidArgument, RpcError, toStatus } from './status';
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
import type { UploadDatasetRequest__Output } from './generated/clipserve/v1/UploadDatasetRequest';
import type { UploadDatasetResponse } from './generated/clipserve/v1/UploadDatasetResponse';
import type { WatchFineTuneJobRequest__Output } from './generated/clipserve/v1/WatchFineTuneJobRequest';
import type { WatchFineTuneJobResponse } from './generated/clipserve/v1/WatchFineTuneJobResponse';

export interface FineTuneServiceDeps {
  runner: FineTuneJobRunner;
  catalog: DatasetCatalog;
  gate: CallGate;
  logger: Logger;
}

/** How often a watch checks for shutdown, and re-reads the store where notifications stay in one process. */
const WATCH_TICK_MS = 1000;
/** With notifications from every instance (PostgreSQL), the re-read is only a safety net: every 5 ticks. */
const SHARED_POLL_TICKS = 5;
/** Events a watch reads from the store at a time (a job may have tens of thousands). */
const WATCH_PAGE = 64;
/**
 * How long a finished upload waits for a cancel that may follow its half-close (see UploadDataset):
 * a small price once per upload, against a dataset the client was told it cancelled.
 */
const CANCEL_GRACE_MS = 250;

/** Resolves on the call's 'cancelled' or after `ms`, whichever comes first. */
function cancelOrTimeout(call: grpc.ServerReadableStream<UploadDatasetRequest__Output, UploadDatasetResponse>, ms: number): Promise<void> {
  if (call.cancelled) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      call.off('cancelled', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    call.on('cancelled', done);
  });
}

/** Resolves when the stream may take more writes, or the call ended. */
function writable(call: grpc.ServerWritableStream<WatchFineTuneJobRequest__Output, WatchFineTuneJobResponse>): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
  });
}

export function fineTuneServiceHandlers(deps: FineTuneServiceDeps): grpc.UntypedServiceImplementation {
  const { runner, catalog, gate, logger } = deps;
  const unary = <Req, Res>(method: string, fn: (req: Req, ctx: CallContext) => Promise<Res>) => unaryHandler<Req, Res>(method, gate, logger, (req, ctx) => mapped(() => fn(req, ctx)));

  const uploadDataset: grpc.handleClientStreamingCall<UploadDatasetRequest__Output, UploadDatasetResponse> = (call, callback) => {
    const ctx = callContext(call as never, 'UploadDataset', logger);
    const log = ctx.log;
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      return callback({ code: st.code, details: st.details });
    }
    let upload: DatasetUpload | undefined;
    /** The call has its answer (an error, or the dataset): nothing after that may answer again. */
    let settled = false;
    let index = 0;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      upload?.abort();
      const st = toStatus(fineTuneRpcError(err));
      if (st.internal) log.error({ err }, 'dataset upload failed');
      ctx.settle();
      callback({ code: st.code, details: st.details });
      call.destroy();
      gate.exit();
    };
    // A cancelled upload is no dataset, however much of it arrived: grpc-js may still deliver the
    // half-close that was queued before the cancel, so 'end' alone does not mean "complete".
    call.on('cancelled', () => fail(new RpcError(grpc.status.CANCELLED, 'upload cancelled by the client')));
    call.on('data', (m: UploadDatasetRequest__Output) => {
      if (settled) return;
      try {
        index++;
        if (!upload) {
          const h = m.header;
          if (m.payload !== 'header' || !h) throw invalidArgument('the first UploadDatasetRequest must carry the header');
          const format = datasetFormatFromMessage(h.format);
          if (!format) throw invalidArgument('header.format must be DATASET_FORMAT_PAIRS, _ZIP or _CSV');
          // The quota check reads the store: no message is taken until the upload exists.
          call.pause();
          catalog
            .beginUpload(
              {
                name: String(h.name ?? ''),
                format,
                columns: { imgKey: String(h.csvImgKey ?? ''), captionKey: String(h.csvCaptionKey ?? ''), separator: String(h.csvSeparator ?? '') },
              },
              ctx.keyName,
            )
            .then(
              (u) => {
                upload = u;
                if (!settled) call.resume();
              },
              (err: unknown) => fail(fineTuneRpcError(err)),
            );
          return;
        }
        if (m.payload === 'pair' && m.pair) upload.addPair(m.pair.image, m.pair.caption);
        else if (m.payload === 'chunk' && m.chunk) upload.addChunk(m.chunk);
        else throw invalidArgument(`message ${index}: only the first message may be a header`);
      } catch (err) {
        const mappedErr = fineTuneRpcError(err);
        fail(mappedErr instanceof RpcError && err instanceof DatasetError ? new RpcError(mappedErr.code, `message ${index}: ${mappedErr.message}`) : mappedErr);
      }
    });
    call.on('error', (err) => fail(err));
    call.on('end', () => {
      if (settled) return;
      if (call.cancelled || ctx.signal.aborted) return fail(new RpcError(grpc.status.CANCELLED, 'upload cancelled by the client'));
      if (!upload) return fail(invalidArgument('empty upload: send a header, then pairs or chunks'));
      // 'end' is not "complete": grpc-js's client cancels a client stream by half-closing it and
      // then resetting it, and Node sends the reset only after the pending data (the half-close)
      // is written, so the server may see a normal end and, tens of milliseconds later, the cancel.
      // The dataset is registered only after everything is staged and a last look: the response
      // headers go out (grpc-js then notices a stream already reset) and the upload waits up to
      // CANCEL_GRACE_MS for a cancel on its way; finish() then sees the aborted signal.
      const lastLook = async (): Promise<void> => {
        call.sendMetadata(new grpc.Metadata());
        await cancelOrTimeout(call, CANCEL_GRACE_MS);
      };
      const finishing = upload;
      finishing.finish(ctx.signal, lastLook).then(
        (record) => {
          if (settled) return; // cancelled while finishing: finish saw the signal, or the record stays listed
          settled = true; // grpc-js also emits 'cancelled' when the stream closes after the status
          log.info({ dataset: record.id, pairs: record.numPairs, bytes: record.bytes }, 'dataset uploaded');
          ctx.settle();
          callback(null, { dataset: datasetToMessage(record) });
          gate.exit();
        },
        (err: unknown) => {
          upload = undefined; // finish cleaned up already
          fail(err);
        },
      );
    });
  };

  /**
   * Backlog from the store, a page at a time (a job may have tens of thousands of events, and
   * twenty watchers must not read them all in one turn of the event loop; a slow client's full
   * buffer pauses the reading), then live events: woken by this instance's runner when it writes
   * them and by the store's notifications when another instance does (LISTEN/NOTIFY on
   * PostgreSQL), and re-read on a timer in case a notification was lost (every second where
   * notifications do not cross processes). Sequence numbers order and dedupe the three.
   */
  const watch: grpc.handleServerStreamingCall<WatchFineTuneJobRequest__Output, WatchFineTuneJobResponse> = (call) => {
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      return call.emit('error', { code: st.code, details: st.details });
    }
    let exited = false;
    let unsubscribe = (): void => undefined;
    let timer: NodeJS.Timeout | undefined;
    const end = (err?: unknown) => {
      if (exited) return;
      exited = true;
      unsubscribe();
      clearInterval(timer);
      if (err) {
        const st = toStatus(fineTuneRpcError(err));
        call.emit('error', { code: st.code, details: st.details });
      } else call.end();
      gate.exit();
    };
    call.on('cancelled', () => end());
    const jobId = String(call.request.jobId ?? '');
    let last = Number(call.request.afterSequence ?? 0);
    // The job's state as of the last event sent (WatchFineTuneJobResponse.state).
    let state: JobState = 'queued';
    const send = (ev: JobEventRecord): void => {
      last = ev.sequence;
      if (ev.type === 'state' && typeof ev.data.state === 'string') state = ev.data.state as JobState;
      call.write({ event: eventToMessage(ev), state: jobStateName(state) });
      if (ev.type === 'state' && TERMINAL_STATES.has(ev.data.state as JobState)) end();
    };
    // One read of the store at a time; a wake during a read asks for another one after it.
    let reading = false;
    let again = false;
    const catchUp = async (): Promise<void> => {
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      try {
        do {
          again = false;
          for (;;) {
            if (exited) return;
            const page = await runner.events(jobId, last, WATCH_PAGE);
            for (const ev of page) {
              if (exited || call.writableNeedDrain) break;
              if (ev.sequence === last + 1) send(ev);
            }
            if (exited) return;
            if (call.writableNeedDrain) {
              await writable(call);
              continue;
            }
            if (page.length < WATCH_PAGE) break;
            await nextTurn();
          }
          // A finished job whose terminal event was sent before after_sequence: nothing will come.
          if (!exited && TERMINAL_STATES.has((await runner.get(jobId)).state)) {
            if ((await runner.events(jobId, last, 1)).length === 0) end();
            else again = true;
          }
        } while (again && !exited);
      } catch (err) {
        end(err);
      } finally {
        reading = false;
      }
    };
    void (async () => {
      try {
        await runner.get(jobId); // NOT_FOUND before anything is sent
        if (last > 0) state = await runner.stateAt(jobId, last);
        if (exited) return;
        unsubscribe = runner.subscribe(jobId, (w) => {
          if (exited || w.sequence <= last) return;
          if (w.event && w.sequence === last + 1 && !reading && !call.writableNeedDrain) send(w.event);
          else if (w.event) void catchUp();
          // A bare number (a notification): this process's own write hands over the record itself
          // right after, so read the store only if that does not come in this turn.
          else setImmediate(() => !exited && w.sequence > last && void catchUp());
        });
        let ticks = 0;
        const readEvery = runner.sharedNotifications ? SHARED_POLL_TICKS : 1;
        timer = setInterval(() => {
          // A watch may last hours: on shutdown, end it so the drain is not held up; the client
          // resumes elsewhere with after_sequence.
          if (gate.phase !== 'serving') return end(new RpcError(grpc.status.UNAVAILABLE, `server is shutting down: watch again with after_sequence ${last}`));
          if (++ticks % readEvery === 0) void catchUp();
        }, WATCH_TICK_MS);
        timer.unref();
        // Not awaited: with events arriving all the time the reading goes on, and the timer above
        // must already be there to end the watch on shutdown.
        void catchUp();
      } catch (err) {
        end(err);
      }
    })();
  };

  return {
    UploadDataset: uploadDataset,
    CreateFineTuneJob: unary<CreateFineTuneJobRequest__Output, CreateFineTuneJobResponse>('CreateFineTuneJob', async (req, ctx) => {
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
    }),
    GetFineTuneJob: unary<GetFineTuneJobRequest__Output, GetFineTuneJobResponse>('GetFineTuneJob', async (req) => ({ job: jobToMessage(await runner.get(String(req.jobId ?? ''))) })),
    ListFineTuneJobs: unary<ListFineTuneJobsRequest__Output, ListFineTuneJobsResponse>('ListFineTuneJobs', async (req) => {
      const { jobs, nextPageToken } = await runner.list(Number(req.pageSize ?? 0), String(req.pageToken ?? ''));
      return { jobs: jobs.map(jobToMessage), nextPageToken };
    }),
    CancelFineTuneJob: unary<CancelFineTuneJobRequest__Output, CancelFineTuneJobResponse>('CancelFineTuneJob', async (req) => ({ job: jobToMessage(await runner.cancel(String(req.jobId ?? ''))) })),
    WatchFineTuneJob: watch,
    ListDatasets: unary<ListDatasetsRequest__Output, ListDatasetsResponse>('ListDatasets', async (req, ctx) => {
      const { datasets, nextPageToken } = await catalog.list(ctx.keyName, Number(req.pageSize ?? 0), String(req.pageToken ?? ''));
      return { datasets: datasets.map(datasetToMessage), nextPageToken };
    }),
    DeleteDataset: unary<DeleteDatasetRequest__Output, DeleteDatasetResponse>('DeleteDataset', async (req, ctx) => ({ dataset: datasetToMessage(await catalog.delete(String(req.datasetId ?? ''), ctx.keyName)) })),
  };
}
