/**
 * fastify's own request failures (schema validation, JSON that does not parse, a body over the
 * limit, a wrong content type) as OpenAI-style errors: a message that names the field at fault
 * and says what it must be, in place of ajv's list of every branch that did not match.
 */
import type { FastifyError } from 'fastify';
import { ApiError } from './errors';

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** What each field of POST /v1/embeddings must be, for "anyOf"/"enum"-style failures. */
const MUST_BE: Readonly<Record<string, string>> = {
  input: 'a string, or an array of strings, {"text": "..."} and {"image": "<data: URI or base64>"} items',
  'input[]': 'a string, {"text": "..."} or {"image": "<data: URI or base64>"}',
  encoding_format: '"float" or "base64"',
  modality: '"text" or "image"',
};

/** fastify's error codes → OpenAI-style `code` values. */
const CODES: Readonly<Record<string, string>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'request_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
};

/** The ApiError for a failure fastify raised itself, or undefined for anything else. */
export function frameworkError(err: FastifyError): ApiError | undefined {
  if (Array.isArray(err.validation)) return validationError(err.validation as AjvError[]);
  const status = err.statusCode;
  if (typeof status !== 'number' || status < 400 || status > 499) return undefined;
  // JSON.parse's message ("Unexpected token } in JSON at position 7") says where, never the body.
  const message =
    status === 413
      ? `request body over the limit of the server (--max-message-bytes): ${err.message}`
      : status === 415
        ? 'unsupported content-type: send the body as JSON with "Content-Type: application/json"'
        : err.message;
  return new ApiError(
    status,
    message,
    CODES[err.code] ?? (err instanceof SyntaxError ? 'invalid_json' : 'invalid_request'),
  );
}

function validationError(errors: readonly AjvError[]): ApiError {
  const first = errors[0];
  if (first === undefined) return ApiError.invalid('invalid request body', null);
  if (first.keyword === 'required') {
    const missing = String(first.params.missingProperty);
    return ApiError.invalid(`${missing}: required`, missing, 'missing_required_parameter');
  }
  if (first.keyword === 'additionalProperties') {
    const extra = String(first.params.additionalProperty).slice(0, 64);
    const at = paramOf(first.instancePath);
    return ApiError.invalid(
      `${at ? `${at}: ` : ''}unknown field ${JSON.stringify(extra)}`,
      at ? `${at}.${extra}` : extra,
      'unknown_parameter',
    );
  }
  if (first.instancePath === '') return ApiError.invalid('the request body must be a JSON object', null);
  // A union reports each branch; describe the field at the top of the failing path instead.
  const union = errors.find((e) => e.keyword === 'anyOf');
  const at = union ?? first;
  const param = paramOf(at.instancePath);
  const described = MUST_BE[param.replace(/\[\d+\]/g, '[]')] ?? MUST_BE[param];
  return ApiError.invalid(`${param}: ${described ? `must be ${described}` : (at.message ?? 'invalid')}`, param);
}

/** "/input/2/text" → "input[2].text". */
function paramOf(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((seg, i) => (/^\d+$/.test(seg) ? `[${seg}]` : i === 0 ? seg : `.${seg}`))
    .join('');
}
