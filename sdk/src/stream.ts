/**
 * embedStream: a bidirectional EmbedStream call driven by an async iterable of items, exposed as
 * an async iterable of results.
 *
 * Backpressure, end to end: at most `maxInFlight` items are sent and not yet answered, so when the
 * consumer stops pulling results, the result stream's buffer fills, grpc-js stops reading from
 * HTTP/2 (flow control tells the server to stop sending), answers stop arriving, and the writer
 * stops pulling from the source. Memory stays bounded on both sides whatever the speeds.
 */
import * as grpc from '@grpc/grpc-js';
import { abortedError, linkAbort } from './call.js';
import { ClipServeError, toClipServeError } from './errors.js';
import { imageBytes } from './inputs.js';
import { decodeEmbedding } from './vectors.js';
import type { Modality, StreamItem, StreamResult } from './types.js';
import type { EmbedStreamRequest, EmbedStreamResponse, WireModality } from './wire.js';

export const DEFAULT_MAX_IN_FLIGHT = 64;

export interface StreamCallParams {
  open: () => grpc.ClientDuplexStream<EmbedStreamRequest, EmbedStreamResponse>;
  raw: boolean;
  modelVersion: string;
  maxInFlight: number;
  signal: AbortSignal | undefined;
}

export function modalityOf(m: WireModality): Modality | undefined {
  return m === 'MODALITY_TEXT' ? 'text' : m === 'MODALITY_IMAGE' ? 'image' : undefined;
}

async function toRequest(
  item: StreamItem,
  position: number,
  raw: boolean,
  modelVersion: string,
): Promise<EmbedStreamRequest> {
  if (item === null || typeof item !== 'object')
    throw new ClipServeError({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'a stream item must be an object { id?, text } or { id?, image }',
      itemIndex: position,
    });
  const id = item.id ?? String(position);
  if (typeof id !== 'string')
    throw new ClipServeError({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'a stream item id must be a string',
      itemIndex: position,
    });
  const base = { id, raw, format: 'EMBEDDING_FORMAT_F32LE_BYTES' as const, modelVersion };
  const hasText = item.text !== undefined;
  const hasImage = item.image !== undefined;
  if (hasText === hasImage)
    throw new ClipServeError({
      code: grpc.status.INVALID_ARGUMENT,
      details: `stream item ${JSON.stringify(id)} needs exactly one of text and image`,
      itemIndex: position,
    });
  if (hasText) {
    if (typeof item.text !== 'string')
      throw new ClipServeError({
        code: grpc.status.INVALID_ARGUMENT,
        details: `stream item ${JSON.stringify(id)}: text must be a string`,
        itemIndex: position,
      });
    return { ...base, text: item.text };
  }
  return { ...base, image: await imageBytes(item.image!, position) };
}

function toResult(msg: EmbedStreamResponse): StreamResult {
  const modality = modalityOf(msg.modality);
  if (msg.result === 'embedding' && msg.embedding) {
    return {
      id: msg.id,
      modality: modality ?? 'text',
      embedding: decodeEmbedding(msg.embedding, 0),
      truncated: msg.embedding.truncated,
    };
  }
  const status = msg.error ?? {
    code: grpc.status.UNKNOWN,
    message: 'the server answered with neither an embedding nor an error',
  };
  return { id: msg.id, modality, error: new ClipServeError({ code: status.code, details: status.message }) };
}

/** A counter with an async wait for "below the limit". */
class Window {
  private used = 0;
  private waiter: (() => void) | undefined;
  constructor(private readonly limit: number) {}
  async acquire(cancelled: () => boolean): Promise<void> {
    while (this.used >= this.limit && !cancelled()) await new Promise<void>((r) => (this.waiter = r));
    this.used++;
  }
  release(): void {
    this.used = Math.max(0, this.used - 1);
    this.wake();
  }
  wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

export async function* embedStream(
  source: AsyncIterable<StreamItem> | Iterable<StreamItem>,
  p: StreamCallParams,
): AsyncGenerator<StreamResult> {
  if (!(Number.isInteger(p.maxInFlight) && p.maxInFlight >= 1))
    throw new RangeError('maxInFlight must be an integer >= 1');
  if (p.signal?.aborted) throw abortedError(p.signal);
  const call = p.open();
  const detach = linkAbort(p.signal, call);
  const window = new Window(p.maxInFlight);
  let writerError: ClipServeError | undefined;
  let finished = false;
  // grpc-js emits 'error' on the call for a failed status; the reader below sees it too. This
  // listener only keeps an error that arrives while nobody iterates from being unhandled.
  call.on('error', () => {});

  void (async () => {
    let position = 0;
    try {
      for await (const item of source) {
        await window.acquire(() => finished);
        if (finished) return;
        const request = await toRequest(item, position++, p.raw, p.modelVersion);
        if (!call.write(request)) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              call.off('drain', done);
              call.off('close', done);
              resolve();
            };
            call.on('drain', done);
            call.on('close', done);
          });
        }
        if (finished) return;
      }
      call.end();
    } catch (err) {
      writerError = toClipServeError(err);
      call.cancel();
    }
  })();

  try {
    for await (const msg of call as AsyncIterable<EmbedStreamResponse>) {
      yield toResult(msg);
      // Released only once the consumer asks for the next result: an item it is still working on
      // counts as in flight, so a slow consumer throttles the writer directly.
      window.release();
    }
  } catch (err) {
    if (writerError) throw writerError;
    if (p.signal?.aborted) throw abortedError(p.signal);
    throw toClipServeError(err);
  } finally {
    finished = true;
    window.wake();
    detach();
    // The consumer stopped early (break / throw) or the call ended: make sure nothing keeps running.
    // The writer is not awaited: it may be blocked inside the caller's source, and it exits (closing
    // the source) as soon as that yields again.
    call.cancel();
  }
  if (writerError) throw writerError;
}
