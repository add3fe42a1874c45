/**
 * EmbedStream: a bidirectional stream of mixed text/image items. Each item is queued as it
 * arrives and answered, with the client's id, as soon as its batch finishes (completion order).
 * A failing item is answered with its status; the stream goes on.
 *
 * Flow control: `window` bounds the items of one stream that were read but whose results are not
 * yet handed to HTTP/2 (queued or running + written but unflushed). At the bound the handler stops
 * reading (call.pause()); grpc-js then stops reading the HTTP/2 stream, the client's send window
 * closes, and a client that reads slowly slows its own writes instead of growing server memory.
 * Reading resumes once the backlog falls to half the window.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { SubmitOptions } from '../batching';
import { CallGate, callContext, elapsedMs } from './call-context';
import type { EmbedStreamRequest, EmbedStreamResponse, ModalityName } from './messages';
import { type ModelResolver, withModel } from './model-resolver';
import { RpcError, toStatus } from './status';
import { checkModelVersion, checkTextLength, RequestLimits } from './validate';
import { l2normalized } from '../inference/heads';
import { embeddingMessage } from './vectors';

/** Counters across all streams of a server, for tests and diagnostics. */
export class StreamStats {
  active = 0;
  itemsReceived = 0;
  itemsAnswered = 0;
  /** Largest backlog (read, not yet flushed) any stream reached. */
  peakBacklog = 0;
}

export interface EmbedStreamDeps {
  /** Each item leases the version it pins ("" = the active one) for its own run. */
  models: ModelResolver;
  gate: CallGate;
  logger: Logger;
  limits: RequestLimits;
  /** Most items read but not yet flushed, per stream. */
  window: number;
  stats?: StreamStats;
}

export function embedStreamHandler(
  deps: EmbedStreamDeps,
): grpc.handleBidiStreamingCall<EmbedStreamRequest, EmbedStreamResponse> {
  if (!Number.isInteger(deps.window) || deps.window < 1)
    throw new RangeError(`stream window must be a positive integer, got ${deps.window}`);
  return (call) => {
    const ctx = callContext(call as grpc.ServerDuplexStream<unknown, unknown>, 'EmbedStream', deps.logger);
    try {
      deps.gate.enter();
    } catch (err) {
      const st = toStatus(err);
      call.emit('error', { code: st.code, details: st.details });
      return;
    }
    new EmbedStreamSession(
      call,
      deps,
      { signal: ctx.signal, deadline: ctx.deadline, key: ctx.callerKey },
      ctx.log,
    ).start();
  };
}

class EmbedStreamSession {
  private inFlight = 0;
  private paused = false;
  private readEnded = false;
  private finished = false;
  private readonly started = process.hrtime.bigint();
  private received = 0;
  private readonly stats: StreamStats;

  constructor(
    private readonly call: grpc.ServerDuplexStream<EmbedStreamRequest, EmbedStreamResponse>,
    private readonly deps: EmbedStreamDeps,
    private readonly options: SubmitOptions & { signal: AbortSignal },
    private readonly log: Logger,
  ) {
    this.stats = deps.stats ?? new StreamStats();
  }

  start(): void {
    this.stats.active++;
    this.call.on('data', (req: EmbedStreamRequest) => this.onItem(req));
    this.call.on('end', () => {
      this.readEnded = true;
      this.maybeFinish();
    });
    this.call.on('drain', () => this.maybeResume());
    this.options.signal.addEventListener('abort', () => this.finish('cancelled'), { once: true });
    // Any other end of the call (transport error, grpc-js ending it on a bad message) still
    // releases the drain gate; after a normal finish this is a no-op.
    this.call.on('close', () => this.finish('cancelled'));
    this.call.on('error', () => this.finish('cancelled'));
  }

  /** Items read and not yet handed to HTTP/2. */
  private backlog(): number {
    return this.inFlight + this.call.writableLength;
  }

  private onItem(req: EmbedStreamRequest): void {
    if (this.finished) return;
    this.received++;
    this.stats.itemsReceived++;
    this.inFlight++;
    this.embed(req).then(
      (res) => this.answer(res),
      (err: unknown) => this.answer(this.errorResponse(req, err)),
    );
    const backlog = this.backlog();
    if (backlog > this.stats.peakBacklog) this.stats.peakBacklog = backlog;
    if (!this.paused && backlog >= this.deps.window) {
      this.paused = true;
      this.call.pause();
    }
  }

  private async embed(req: EmbedStreamRequest): Promise<EmbedStreamResponse> {
    checkModelVersion(req.modelVersion);
    const normalize = (v: Float32Array) => (req.raw ? v : l2normalized(v));
    if (req.input === 'text') {
      checkTextLength(`item "${req.id}"`, req.text ?? '', this.deps.limits);
      return withModel(this.deps.models, req.modelVersion, async ({ info, embedder }) => {
        const [r] = await Promise.all(embedder.embedTexts([req.text ?? ''], this.options));
        return {
          id: req.id,
          embedding: embeddingMessage(normalize(r.vector), req.format, r.truncated),
          modality: 'MODALITY_TEXT',
          modelVersion: info.version,
        };
      });
    }
    if (req.input === 'image') {
      return withModel(this.deps.models, req.modelVersion, async ({ info, embedder }) => {
        const [v] = await Promise.all(embedder.embedImages([req.image ?? Buffer.alloc(0)], this.options));
        return {
          id: req.id,
          embedding: embeddingMessage(normalize(v), req.format),
          modality: 'MODALITY_IMAGE',
          modelVersion: info.version,
        };
      });
    }
    throw new RpcError(grpc.status.INVALID_ARGUMENT, `item "${req.id}": one of text or image is required`);
  }

  private errorResponse(req: EmbedStreamRequest, err: unknown): EmbedStreamResponse {
    const st = toStatus(err, `item "${req.id}"`);
    if (st.internal) this.log.error({ err, itemId: req.id }, 'stream item failed');
    const modality: ModalityName =
      req.input === 'text' ? 'MODALITY_TEXT' : req.input === 'image' ? 'MODALITY_IMAGE' : 'MODALITY_UNSPECIFIED';
    // No version produced anything for it: the version it asked for, or the active one.
    const asked = req.modelVersion !== '' && req.modelVersion.length <= 128 ? req.modelVersion : undefined;
    const modelVersion = asked ?? this.deps.models.loadedVersions().find((v) => v.active)?.version ?? '';
    return { id: req.id, error: { code: st.code, message: st.details }, modality, modelVersion };
  }

  private answer(res: EmbedStreamResponse): void {
    this.inFlight--;
    if (!this.finished) {
      this.call.write(res);
      this.stats.itemsAnswered++;
    }
    this.maybeResume();
    this.maybeFinish();
  }

  private maybeResume(): void {
    if (this.paused && !this.finished && this.backlog() <= Math.floor(this.deps.window / 2)) {
      this.paused = false;
      this.call.resume();
    }
  }

  private maybeFinish(): void {
    if (this.readEnded && this.inFlight === 0) this.finish('ok');
  }

  private finish(how: 'ok' | 'cancelled'): void {
    if (this.finished) return;
    this.finished = true;
    this.stats.active--;
    if (how === 'ok') this.call.end();
    this.deps.gate.exit();
    this.log.debug({ how, items: this.received, ms: elapsedMs(this.started) }, 'stream done');
  }
}
