/**
 * clipserve.v1.FineTuneService handlers: thin adapters over the dataset catalogue and the job
 * runner (server/src/finetune), which own the rules.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DatasetError, type DatasetCatalog, type DatasetUpload } from '../finetune/dataset';
import type { FineTuneJobRunner } from '../finetune/jobs';
import { TERMINAL_STATES, type JobEventRecord, type JobState } from '../store/store';
import { callContext, CallGate, unaryHandler } from './call-context';
import { mapped, fineTuneRpcError } from './finetune-errors';
import { datasetFormatFromMessage, datasetToMessage, eventToMessage, hyperparametersFromMessage, jobStateName, jobToMessage } from './finetune-messages';
import { invalidArgument, RpcError, toStatus } from './status';

export interface FineTuneServiceDeps {
  runner: FineTuneJobRunner;
  catalog: DatasetCatalog;
  gate: CallGate;
  logger: Logger;
}

type Msg = Record<string, unknown>;

/** How often a watch checks for shutdown, and re-reads the store where notifications stay in one process. */
const WATCH_TICK_MS = 1000;
/** With notifications from every instance (PostgreSQL), the re-read is only a safety net: every 5 ticks. */
const SHARED_POLL_TICKS = 5;

export function fineTuneServiceHandlers(deps: FineTuneServiceDeps): grpc.UntypedServiceImplementation {
  const { runner, catalog, gate, logger } = deps;
  const unary = <Res>(method: string, fn: (req: Msg) => Promise<Res>) => unaryHandler<Msg, Res>(method, gate, logger, (req) => mapped(() => fn(req)));

  const uploadDataset: grpc.handleClientStreamingCall<Msg, Msg> = (call, callback) => {
    const log = callContext(call as never, 'UploadDataset', logger).log;
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      return callback({ code: st.code, details: st.details });
    }
    let upload: DatasetUpload | undefined;
    let failed = false;
    let index = 0;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      upload?.abort();
      const st = toStatus(fineTuneRpcError(err));
      if (st.internal) log.error({ err }, 'dataset upload failed');
      callback({ code: st.code, details: st.details });
      call.destroy();
      gate.exit();
    };
    call.on('data', (m: Msg) => {
      if (failed) return;
      try {
        index++;
        if (!upload) {
          const h = m.header as Msg | undefined;
          if (m.payload !== 'header' || !h) throw invalidArgument('the first UploadDatasetRequest must carry the header');
          const format = datasetFormatFromMessage(h.format as string);
          if (!format) throw invalidArgument('header.format must be DATASET_FORMAT_PAIRS, _ZIP or _CSV');
          upload = catalog.beginUpload({
            name: String(h.name ?? ''),
            format,
            columns: { imgKey: String(h.csvImgKey ?? ''), captionKey: String(h.csvCaptionKey ?? ''), separator: String(h.csvSeparator ?? '') },
          });
          return;
        }
        if (m.payload === 'pair') {
          const p = m.pair as { image: Uint8Array; caption: string };
          upload.addPair(p.image, p.caption);
        } else if (m.payload === 'chunk') upload.addChunk(m.chunk as Uint8Array);
        else throw invalidArgument(`message ${index}: only the first message may be a header`);
      } catch (err) {
        fail(err instanceof DatasetError ? invalidArgument(`message ${index}: ${err.message}`) : err);
      }
    });
    call.on('error', (err) => fail(err));
    call.on('end', () => {
      if (failed) return;
      if (!upload) return fail(invalidArgument('empty upload: send a header, then pairs or chunks'));
      upload.finish().then(
        (record) => {
          log.info({ dataset: record.id, pairs: record.numPairs, bytes: record.bytes }, 'dataset uploaded');
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
   * Backlog from the store, then live events: woken by this instance's runner when it writes them
   * and by the store's notifications when another instance does (LISTEN/NOTIFY on PostgreSQL), and
   * re-read on a timer in case a notification was lost (every second where notifications do not
   * cross processes). Sequence numbers order and dedupe the three.
   */
  const watch: grpc.handleServerStreamingCall<Msg, Msg> = (call) => {
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
          const backlog = await runner.events(jobId, last);
          for (const ev of backlog) if (!exited && ev.sequence === last + 1) send(ev);
          // A finished job whose terminal event was sent before after_sequence: nothing will come.
          if (!exited && backlog.length === 0 && TERMINAL_STATES.has((await runner.get(jobId)).state)) {
            if ((await runner.events(jobId, last)).length === 0) end();
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
        if (last > 0) {
          for (const ev of await runner.events(jobId, 0)) if (ev.sequence <= last && ev.type === 'state' && typeof ev.data.state === 'string') state = ev.data.state as JobState;
        }
        if (exited) return;
        unsubscribe = runner.subscribe(jobId, (w) => {
          if (exited || w.sequence <= last) return;
          if (w.event && w.sequence === last + 1 && !reading) send(w.event);
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
    CreateFineTuneJob: unary('CreateFineTuneJob', async (req) => {
      const job = await runner.create({
        trainingFile: String(req.trainingFile ?? ''),
        validationFile: String(req.validationFile ?? ''),
        method: String(req.method ?? ''),
        baseModel: String(req.baseModel ?? ''),
        hyperparameters: hyperparametersFromMessage(req.hyperparameters as Msg | undefined),
        suffix: String(req.suffix ?? ''),
      });
      return { job: jobToMessage(job) };
    }),
    GetFineTuneJob: unary('GetFineTuneJob', async (req) => ({ job: jobToMessage(await runner.get(String(req.jobId ?? ''))) })),
    ListFineTuneJobs: unary('ListFineTuneJobs', async (req) => {
      const { jobs, nextPageToken } = await runner.list(Number(req.pageSize ?? 0), String(req.pageToken ?? ''));
      return { jobs: jobs.map(jobToMessage), nextPageToken };
    }),
    CancelFineTuneJob: unary('CancelFineTuneJob', async (req) => ({ job: jobToMessage(await runner.cancel(String(req.jobId ?? ''))) })),
    WatchFineTuneJob: watch,
  };
}
