/**
 * UploadDataset: a client stream of a header, then image/caption pairs or file chunks, staged by
 * the dataset catalogue and registered only once complete (a cancelled upload is no dataset).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DatasetError, type DatasetCatalog, type DatasetUpload } from '../finetune/dataset';
import { callContext, type CallContext, type CallGate } from './call-context';
import { fineTuneRpcError } from './finetune-errors';
import { datasetFormatFromMessage, datasetToMessage } from './finetune-messages';
import { invalidArgument, RpcError, toStatus } from './status';
import type { UploadDatasetRequest__Output } from './generated/clipserve/v1/UploadDatasetRequest';
import type { UploadDatasetResponse } from './generated/clipserve/v1/UploadDatasetResponse';

export interface UploadDatasetDeps {
  catalog: DatasetCatalog;
  gate: CallGate;
  logger: Logger;
}

/**
 * How long a finished upload waits for a cancel that may follow its half-close (see UploadDataset):
 * a small price once per upload, against a dataset the client was told it cancelled.
 */
const CANCEL_GRACE_MS = 250;

type UploadCall = grpc.ServerReadableStream<UploadDatasetRequest__Output, UploadDatasetResponse>;

/** Resolves on the call's 'cancelled' or after `ms`, whichever comes first. */
function cancelOrTimeout(call: UploadCall, ms: number): Promise<void> {
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

export function uploadDatasetHandler({
  catalog,
  gate,
  logger,
}: UploadDatasetDeps): grpc.handleClientStreamingCall<UploadDatasetRequest__Output, UploadDatasetResponse> {
  return (call, callback) => {
    const ctx = callContext(call as never, 'UploadDataset', logger);
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      return callback({ code: st.code, details: st.details });
    }
    new DatasetUploadCall(call, callback, ctx, catalog, gate).listen();
  };
}

/** One upload: the header opens it in the catalogue, pairs or chunks fill it, the end registers it. */
class DatasetUploadCall {
  private upload: DatasetUpload | undefined;
  /** The call has its answer (an error, or the dataset): nothing after that may answer again. */
  private settled = false;
  /** Messages read so far (errors name the message). */
  private index = 0;

  constructor(
    private readonly call: UploadCall,
    private readonly callback: grpc.sendUnaryData<UploadDatasetResponse>,
    private readonly ctx: CallContext,
    private readonly catalog: DatasetCatalog,
    private readonly gate: CallGate,
  ) {}

  listen(): void {
    const { call } = this;
    // A cancelled upload is no dataset, however much of it arrived: grpc-js may still deliver the
    // half-close that was queued before the cancel, so 'end' alone does not mean "complete".
    call.on('cancelled', () => this.fail(new RpcError(grpc.status.CANCELLED, 'upload cancelled by the client')));
    call.on('data', (m: UploadDatasetRequest__Output) => this.onMessage(m));
    call.on('error', (err) => this.fail(err));
    call.on('end', () => this.onEnd());
  }

  private onMessage(m: UploadDatasetRequest__Output): void {
    if (this.settled) return;
    try {
      this.index++;
      if (!this.upload) return this.begin(m);
      if (m.payload === 'pair' && m.pair) this.upload.addPair(m.pair.image, m.pair.caption);
      else if (m.payload === 'chunk' && m.chunk) this.upload.addChunk(m.chunk);
      else throw invalidArgument(`message ${this.index}: only the first message may be a header`);
    } catch (err) {
      const mappedErr = fineTuneRpcError(err);
      this.fail(
        mappedErr instanceof RpcError && err instanceof DatasetError
          ? new RpcError(mappedErr.code, `message ${this.index}: ${mappedErr.message}`)
          : mappedErr,
      );
    }
  }

  /** The first message: the header, which opens the upload in the catalogue. */
  private begin(m: UploadDatasetRequest__Output): void {
    const h = m.header;
    if (m.payload !== 'header' || !h) throw invalidArgument('the first UploadDatasetRequest must carry the header');
    const format = datasetFormatFromMessage(h.format);
    if (!format) throw invalidArgument('header.format must be DATASET_FORMAT_PAIRS, _ZIP or _CSV');
    // The quota check reads the store: no message is taken until the upload exists.
    this.call.pause();
    this.catalog
      .beginUpload(
        {
          name: String(h.name ?? ''),
          format,
          columns: {
            imgKey: String(h.csvImgKey ?? ''),
            captionKey: String(h.csvCaptionKey ?? ''),
            separator: String(h.csvSeparator ?? ''),
          },
        },
        this.ctx.keyName,
      )
      .then(
        (u) => {
          this.upload = u;
          if (!this.settled) this.call.resume();
        },
        (err: unknown) => this.fail(fineTuneRpcError(err)),
      );
  }

  private onEnd(): void {
    const { call, ctx } = this;
    if (this.settled) return;
    if (call.cancelled || ctx.signal.aborted)
      return this.fail(new RpcError(grpc.status.CANCELLED, 'upload cancelled by the client'));
    if (!this.upload) return this.fail(invalidArgument('empty upload: send a header, then pairs or chunks'));
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
    this.upload.finish(ctx.signal, lastLook).then(
      (record) => {
        if (this.settled) return; // cancelled while finishing: finish saw the signal, or the record stays listed
        this.settled = true; // grpc-js also emits 'cancelled' when the stream closes after the status
        ctx.log.info({ dataset: record.id, pairs: record.numPairs, bytes: record.bytes }, 'dataset uploaded');
        ctx.settle();
        this.callback(null, { dataset: datasetToMessage(record) });
        this.gate.exit();
      },
      (err: unknown) => {
        this.upload = undefined; // finish cleaned up already
        this.fail(err);
      },
    );
  }

  private fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.upload?.abort();
    const st = toStatus(fineTuneRpcError(err));
    if (st.internal) this.ctx.log.error({ err }, 'dataset upload failed');
    this.ctx.settle();
    this.callback({ code: st.code, details: st.details });
    this.call.destroy();
    this.gate.exit();
  }
}
