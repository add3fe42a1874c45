/**
 * Request checks done before any work is queued. Each failure is INVALID_ARGUMENT with a message
 * naming the offending field or item.
 */
import { invalidArgument } from './status';

/** Limits the server enforces per request (reported by GetModelInfo). */
export interface RequestLimits {
  maxItemsPerRequest: number;
  maxImageBytes: number;
  maxImagePixels: number;
  maxMessageBytes: number;
  maxBatchSize: number;
  maxTextChars: number;
}

/** Longest version string a registry holds (versions/registry SAFE_VERSION). */
const MAX_VERSION_CHARS = 128;

/**
 * A pin is "" (the active version) or a version name; which versions exist is the resolver's
 * business (NOT_FOUND), this only refuses what no version can be, before it is echoed in errors.
 */
export function checkModelVersion(requested: string): void {
  if (requested.length > MAX_VERSION_CHARS)
    throw invalidArgument(
      `model_version: ${requested.length} characters; no model version is longer than ${MAX_VERSION_CHARS}`,
    );
}

/** `field` must hold between `min` and the per-request item limit. */
export function checkCount(field: string, n: number, min: number, limits: RequestLimits): void {
  if (n < min)
    throw invalidArgument(
      min === 1 ? `${field}: at least one item is required` : `${field}: at least ${min} items are required`,
    );
  if (n > limits.maxItemsPerRequest) {
    throw invalidArgument(
      `${field}: ${n} items exceed the limit of ${limits.maxItemsPerRequest} per request; split the request`,
    );
  }
}

/** The total number of items a request queues must fit the per-request limit. */
export function checkTotal(what: string, n: number, limits: RequestLimits): void {
  if (n > limits.maxItemsPerRequest) {
    throw invalidArgument(
      `${what}: ${n} items in total exceed the limit of ${limits.maxItemsPerRequest} per request; split the request`,
    );
  }
}

/** Each text must fit the character limit; `field` names the list ("texts" → "texts[2]"). */
export function checkTextLengths(field: string, texts: readonly string[], limits: RequestLimits): void {
  texts.forEach((t, i) => checkTextLength(`${field}[${i}]`, t, limits));
}

export function checkTextLength(item: string, text: string, limits: RequestLimits): void {
  if (text.length > limits.maxTextChars) {
    throw invalidArgument(
      `${item}: text is ${text.length} characters, over the limit of ${limits.maxTextChars} (the model reads only its first tokens anyway)`,
    );
  }
}

export const DEFAULT_TEMPLATE = 'a photo of a {}.';

/** Zero-shot prompt templates: each must hold exactly one "{}" where the label goes. */
export function checkTemplates(templates: readonly string[]): string[] {
  if (templates.length === 0) return [DEFAULT_TEMPLATE];
  templates.forEach((t, i) => {
    const holes = t.split('{}').length - 1;
    if (holes !== 1)
      throw invalidArgument(`templates[${i}]: must contain exactly one "{}" where the label goes, found ${holes}`);
  });
  return [...templates];
}

export function checkLabels(labels: readonly string[], limits: RequestLimits): void {
  checkCount('labels', labels.length, 1, limits);
  labels.forEach((l, i) => {
    if (l.trim() === '') throw invalidArgument(`labels[${i}]: empty label`);
  });
}
