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

/** How often a watch reads events written by another server instance sharing the data directory. */
const WATCH_POLL_MS = 1000;

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
   * Backlog from the store, then live events: pushed by this instance's runner when it runs the
   * job, and polled from the store (another instance may run it). Sequence numbers dedupe the two.
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
    try {
      const jobId = String(call.request.jobId ?? '');
      let last = Number(call.request.afterSequence ?? 0);
      runner.get(jobId); // NOT_FOUND before anything is sent
      // The job's state as of the last event sent (WatchFineTuneJobResponse.state).
      let state: JobState = 'queued';
      const stateAfter = (ev: JobEventRecord): void => {
        if (ev.type === 'state' && typeof ev.data.state === 'string') state = ev.data.state as JobState;
      };
      if (last > 0) for (const ev of runner.events(jobId, 0)) if (ev.sequence <= last) stateAfter(ev);
      const deliver = (ev: JobEventRecord): void => {
        if (exited || ev.sequence <= last) return;
        if (ev.sequence !== last + 1) return catchUp(); // a gap: read it from the store in order
        last = ev.sequence;
        stateAfter(ev);
        call.write({ event: eventToMessage(ev), state: jobStateName(state) });
        if (ev.type === 'state' && TERMINAL_STATES.has(ev.data.state as JobState)) end();
      };
      const catchUp = (): void => {
        for (const ev of runner.events(jobId, last)) deliver(ev);
        if (!exited && TERMINAL_STATES.has(runner.get(jobId).state) && runner.events(jobId, last).length === 0) end();
      };
      unsubscribe = runner.subscribe(jobId, (ev) => deliver(ev));
      catchUp();
      if (!exited) {
        timer = setInterval(() => {
          try {
            // A watch may last hours: on shutdown, end it so the drain is not held up; the client
            // resumes elsewhere with after_sequence.
            if (gate.phase !== 'serving') return end(new RpcError(grpc.status.UNAVAILABLE, `server is shutting down: watch again with after_sequence ${last}`));
            catchUp();
          } catch (err) {
            end(err);
          }
        }, WATCH_POLL_MS);
        timer.unref();
      }
    } catch (err) {
      end(err);
    }
  };

  return {
    UploadDataset: uploadDataset,
    CreateFineTuneJob: unary('CreateFineTuneJob', async (req) => {
      const job = runner.create({
        trainingFile: String(req.trainingFile ?? ''),
        validationFile: String(req.validationFile ?? ''),
        method: String(req.method ?? ''),
        baseModel: String(req.baseModel ?? ''),
        hyperparameters: hyperparametersFromMessage(req.hyperparameters as Msg | undefined),
        suffix: String(req.suffix ?? ''),
      });
      return { job: jobToMessage(job) };
    }),
    GetFineTuneJob: unary('GetFineTuneJob', async (req) => ({ job: jobToMessage(runner.get(String(req.jobId ?? ''))) })),
    ListFineTuneJobs: unary('ListFineTuneJobs', async (req) => {
      const { jobs, nextPageToken } = runner.list(Number(req.pageSize ?? 0), String(req.pageToken ?? ''));
      return { jobs: jobs.map(jobToMessage), nextPageToken };
    }),
    CancelFineTuneJob: unary('CancelFineTuneJob', async (req) => ({ job: jobToMessage(await runner.cancel(String(req.jobId ?? ''))) })),
    WatchFineTuneJob: watch,
  };
}
