/**
 * The `input` of POST /v1/embeddings, as the ecosystem sends it, turned into one list of texts and
 * images in request order:
 *   - OpenAI: a string or an array of strings (texts);
 *   - Jina: items as objects, {"text": ...} or {"image": "<data: URI or base64>"};
 *   - Infinity: "modality": "image" makes string items image references.
 * Token-id arrays (OpenAI accepts tiktoken ids) are refused: the ids a client computes are for an
 * OpenAI vocabulary, and CLIP's BPE vocabulary is another, so accepting them would embed nonsense.
 * The size limits are the gRPC API's (grpc/validate.ts), with the same messages.
 */
import { checkCount, checkTextLength, RequestLimits } from '../grpc/validate';
import { ApiError } from './errors';
import type { EmbeddingsRequestBody } from './schemas';

export type EmbeddingItem = { kind: 'text'; text: string } | { kind: 'image'; bytes: Buffer };

/** Runs before schema validation, so token ids get this answer rather than "must be string". */
export function refuseTokenIds(body: unknown): void {
  const input = typeof body === 'object' && body !== null ? (body as { input?: unknown }).input : undefined;
  if (!Array.isArray(input)) return;
  const first = input.find((x) => typeof x === 'number' || Array.isArray(x));
  if (first === undefined) return;
  throw ApiError.invalid(
    "input: token-id arrays are not accepted: the ids a client computes belong to an OpenAI tokenizer, not CLIP's vocabulary; send the text itself " +
      '(LangChain Python: OpenAIEmbeddings(check_embedding_ctx_length=False); texts longer than the context are truncated and reported in usage)',
    'input',
    'token_ids_not_supported',
  );
}

/** Decodes one image reference (image-input.ts), off the event loop when it is large (body-offload.ts). */
export type ImageDecoder = (ref: string, param: string) => Promise<Buffer>;

/** The request's items in order; throws ApiError (400, 413) naming the item at fault. */
export async function embeddingItems(
  body: EmbeddingsRequestBody,
  limits: RequestLimits,
  decodeImage: ImageDecoder,
): Promise<EmbeddingItem[]> {
  const raw = typeof body.input === 'string' ? [body.input] : body.input;
  checkCount('input', raw.length, 1, limits);
  const stringsAreImages = body.modality === 'image';
  // Texts are checked first, so a bad text fails the request before any image is decoded.
  const refs = raw.map((item, i): EmbeddingItem | { kind: 'ref'; ref: string; param: string } => {
    const param = `input[${i}]`;
    if (typeof item === 'string') {
      if (stringsAreImages) return { kind: 'ref', ref: item, param };
      checkTextLength(param, item, limits);
      return { kind: 'text', text: item };
    }
    if ('text' in item) {
      checkTextLength(param, item.text, limits);
      return { kind: 'text', text: item.text };
    }
    return { kind: 'ref', ref: item.image, param };
  });
  return Promise.all(
    refs.map(async (r): Promise<EmbeddingItem> =>
      r.kind === 'ref' ? { kind: 'image', bytes: await decodeImage(r.ref, r.param) } : r,
    ),
  );
}
