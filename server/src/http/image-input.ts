/**
 * Images in JSON: a `data:image/...;base64,` URI (Infinity, OpenAI's vision inputs) or bare base64
 * (Jina). Remote URLs are refused, never fetched: a server that fetches what a client names can be
 * pointed at internal services (server-side request forgery). The size is checked from the base64
 * length BEFORE decoding, and the alphabet strictly (Node's decoder silently skips bad characters,
 * which would turn a typo into a different, corrupt image).
 */
import { ApiError } from './errors';

const DATA_URI = /^data:([^,;]*)((?:;[^,;]*)*),/i;
/** Standard or URL-safe alphabet, padding optional; whitespace (line-wrapped base64) removed first. */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
const REMOTE = /^[a-z][a-z0-9+.-]*:\/\//i;

/** The bytes of one image reference; `param` names it in errors ("input[3]"). */
export function decodeImageReference(ref: string, param: string, maxImageBytes: number): Buffer {
  let payload = ref;
  const dataUri = DATA_URI.exec(ref);
  if (dataUri) {
    const mediaType = dataUri[1].trim().toLowerCase();
    const params = dataUri[2]
      .toLowerCase()
      .split(';')
      .map((p) => p.trim());
    if (mediaType !== '' && !mediaType.startsWith('image/')) {
      throw ApiError.invalid(
        `${param}: a data: URI of type "${mediaType.slice(0, 64)}" is not an image`,
        param,
        'invalid_image',
      );
    }
    if (!params.includes('base64'))
      throw ApiError.invalid(
        `${param}: only base64 data: URIs are accepted ("data:image/png;base64,...")`,
        param,
        'invalid_image',
      );
    payload = ref.slice(dataUri[0].length);
  } else if (REMOTE.test(ref)) {
    throw ApiError.invalid(
      `${param}: image URLs are not fetched (a server fetching client-named URLs could be aimed at internal services); send the image bytes as a data: URI or base64`,
      param,
      'image_url_not_supported',
    );
  }
  const compact = /\s/.test(payload) ? payload.replace(/\s+/g, '') : payload;
  if (compact.length === 0) throw ApiError.invalid(`${param}: empty image`, param, 'invalid_image');
  // 4 base64 characters carry 3 bytes: refuse an oversized image before allocating its bytes.
  const decodedBytes =
    Math.floor((compact.length * 3) / 4) - (compact.endsWith('==') ? 2 : compact.endsWith('=') ? 1 : 0);
  if (decodedBytes > maxImageBytes) {
    throw new ApiError(
      413,
      `${param}: image is ${decodedBytes} bytes, over the limit of ${maxImageBytes} (--max-image-bytes)`,
      'image_too_large',
      param,
    );
  }
  if (!BASE64.test(compact) || compact.length % 4 === 1) {
    throw ApiError.invalid(
      `${param}: not base64 (expected a data:image/...;base64, URI or base64-encoded image bytes)`,
      param,
      'invalid_image',
    );
  }
  // Node's base64 decoder reads the URL-safe alphabet too.
  return Buffer.from(compact, 'base64');
}
