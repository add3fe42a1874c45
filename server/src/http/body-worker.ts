/**
 * Worker thread of the HTTP API's body offloading (body-offload.ts): parses large JSON bodies and
 * decodes large base64 images off the event loop. Runs under piscina; errors the client caused come
 * back as values (their ApiError fields), since an Error crossing threads loses its class.
 */
import { move } from 'piscina';
import sjson from 'secure-json-parse';
import { ApiError } from './errors';
import { decodeImageReference } from './image-input';

export type BodyJob = { op: 'parse'; body: Uint8Array } | { op: 'image'; ref: string; param: string; maxBytes: number };

/** A refusal of the client's input, as the fields of its ApiError. */
export interface BodyJobRefusal {
  refused: { status: number; message: string; code: string | null; param: string | null };
}

/** 'parse': `{ value }`; 'image': the bytes, transferred (not copied) back; or a refusal. */
export default function runBodyJob(job: BodyJob): { value: unknown } | Uint8Array | BodyJobRefusal {
  try {
    if (job.op === 'parse')
      return { value: parseJsonBody(Buffer.from(job.body.buffer, job.body.byteOffset, job.body.byteLength)) };
    const bytes = decodeImageReference(job.ref, job.param, job.maxBytes);
    // A large decode owns its ArrayBuffer (not Node's shared pool), so it can be moved.
    return move(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as Uint8Array;
  } catch (err) {
    if (err instanceof ApiError)
      return { refused: { status: err.status, message: err.message, code: err.code, param: err.param } };
    throw err;
  }
}

/**
 * JSON as fastify's default parser reads it (secure-json-parse): "__proto__" and
 * "constructor.prototype" keys are refused, since they could poison objects built from the body.
 */
export function parseJsonBody(body: Buffer): unknown {
  if (body.length === 0) throw ApiError.invalid('empty body: send a JSON object', null, 'invalid_json');
  try {
    return sjson.parse(body, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (err) {
    // JSON.parse's message says where ("at position 7"), never quotes much of the body.
    throw ApiError.invalid(
      `body is not valid JSON: ${err instanceof Error ? err.message.slice(0, 200) : String(err)}`,
      null,
      'invalid_json',
    );
  }
}
