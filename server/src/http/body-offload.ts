/**
 * Keeps big request bodies off the event loop. gRPC receives image bytes as bytes; HTTP receives
 * them as base64 inside JSON, and parsing plus decoding a 20 MiB image costs the event loop about
 * a quarter of a second (measured on the CI box), long enough to stall every other call. Bodies and
 * image strings over INLINE_MAX_BYTES therefore go to a small piscina pool (threads start on first
 * use); small ones, the common case, are handled inline, where a thread hop would cost more.
 */
import * as os from 'node:os';
import { Piscina } from 'piscina';
import { compiledModule } from '../util/paths';
import { parseJsonBody, type BodyJobRefusal } from './body-worker';
import { ApiError } from './errors';
import { decodeImageReference } from './image-input';

/** Below this, parsing or decoding inline takes well under a millisecond or two. */
export const INLINE_MAX_BYTES = 256 * 1024;

export class BodyOffload {
  private readonly pool: Piscina;

  constructor(threads = Math.max(1, Math.min(4, Math.floor(os.availableParallelism() / 2)))) {
    this.pool = new Piscina({
      filename: compiledModule('http/body-worker'),
      minThreads: 0,
      maxThreads: threads,
      idleTimeout: 30_000,
    });
  }

  /** The JSON value of a request body. */
  async parse(body: Buffer): Promise<unknown> {
    if (body.length <= INLINE_MAX_BYTES) return parseJsonBody(body);
    // The body is not read again here: hand its memory over rather than copy it, when it owns it.
    const owned = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
    const result = await this.pool.run(
      { op: 'parse', body },
      owned ? { transferList: [body.buffer as ArrayBuffer] } : {},
    );
    return (refusedOrValue(result) as { value: unknown }).value;
  }

  /** The bytes of an image reference (see image-input.ts). */
  async image(ref: string, param: string, maxBytes: number): Promise<Buffer> {
    if (ref.length <= INLINE_MAX_BYTES) return decodeImageReference(ref, param, maxBytes);
    const bytes = refusedOrValue(await this.pool.run({ op: 'image', ref, param, maxBytes })) as Uint8Array;
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

/** A worker's answer, with a refusal turned back into the ApiError it was. */
function refusedOrValue(result: unknown): unknown {
  const refused = (result as Partial<BodyJobRefusal>).refused;
  if (refused) throw new ApiError(refused.status, refused.message, refused.code, refused.param);
  return result;
}
