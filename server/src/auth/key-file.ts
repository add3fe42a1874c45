/**
 * Parses API-key lists: the `--api-keys-file` file and the CLIPSERVE_API_KEYS variable.
 *
 * Two formats, told apart by the first non-blank character:
 *
 *   Text (one entry per line, or per `;` so a single environment variable can hold several):
 *     # comment
 *     <key> <scope>[,<scope>…] [name…]
 *
 *   JSON (`{` or `[` first): {"keys": [{"key": "…", "scopes": ["embed"], "name": "ci"}]} or the bare array.
 *
 * A key is either the secret itself (at least MIN_KEY_LENGTH characters of RFC 6750's b64token
 * alphabet: A-Z a-z 0-9 - . _ ~ + / and trailing =) or `sha256:<64 hex>`, its SHA-256 digest, so a
 * key file need not hold usable secrets at all. Either way only the digest is kept: the plain key is
 * hashed as soon as it is read. Error messages name the entry (line or index), never the key.
 */
import { createHash } from 'node:crypto';
import { ApiKeysError } from './errors';
import { isScope, Scope, SCOPES } from './scopes';

export interface ApiKeyEntry {
  /** Names the key in logs; from the entry, or its position ("line 3", "keys[2]") when none is given. */
  name: string;
  scopes: ReadonlySet<Scope>;
  /** SHA-256 of the key's UTF-8 bytes. */
  digest: Buffer;
}

export const MIN_KEY_LENGTH = 16;
/** RFC 6750 b64token: what may follow "Bearer " in an authorization header. */
const KEY_ALPHABET = /^[A-Za-z0-9\-._~+/]+=*$/;
const DIGEST_FORM = /^sha256:([0-9a-fA-F]{64})$/;

export function digestOf(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

/** Parses one key list; `source` names it in errors ("--api-keys-file /etc/…", "CLIPSERVE_API_KEYS"). */
export function parseApiKeys(text: string, source: string): ApiKeyEntry[] {
  const trimmed = text.replace(/^\uFEFF/, '').trim();
  const entries =
    trimmed.startsWith('{') || trimmed.startsWith('[') ? parseJson(trimmed, source) : parseText(text, source);
  const twin = repeatedKey(entries);
  if (twin) throw new ApiKeysError(`${source}: ${twin.second} repeats the key of ${twin.first}`);
  return entries;
}

/** The names of the first two entries holding the same key, if any do. */
export function repeatedKey(entries: readonly ApiKeyEntry[]): { first: string; second: string } | undefined {
  const seen = new Map<string, string>();
  for (const e of entries) {
    const hex = e.digest.toString('hex');
    const first = seen.get(hex);
    if (first !== undefined) return { first, second: e.name };
    seen.set(hex, e.name);
  }
  return undefined;
}

function parseText(text: string, source: string): ApiKeyEntry[] {
  const out: ApiKeyEntry[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, i) => {
    for (const part of line.split(';')) {
      const body = part.trim();
      if (body === '' || body.startsWith('#')) continue;
      const where = lines.length > 1 ? `line ${i + 1}` : `entry ${out.length + 1}`;
      const [key, scopeList, ...nameWords] = body.split(/\s+/);
      if (scopeList === undefined)
        throw new ApiKeysError(`${source}: ${where}: expected "<key> <scope>[,<scope>…] [name]", found no scopes`);
      const scopes = parseScopes(scopeList.split(','), `${source}: ${where}`);
      const name = nameWords.length > 0 ? nameWords.join(' ') : where;
      out.push({ name, scopes, digest: keyDigest(key, `${source}: ${where}`) });
    }
  });
  return out;
}

function parseJson(text: string, source: string): ApiKeyEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // JSON.parse quotes the offending text, which may be a key: report only the position.
    const at = err instanceof Error ? /position \d+/.exec(err.message)?.[0] : undefined;
    throw new ApiKeysError(`${source}: not valid JSON${at ? ` (at ${at})` : ''}`);
  }
  const list = Array.isArray(parsed) ? parsed : isObject(parsed) ? parsed.keys : undefined;
  if (!Array.isArray(list))
    throw new ApiKeysError(`${source}: JSON must be an array of keys or an object with a "keys" array`);
  return list.map((raw, i) => {
    const where = `${source}: keys[${i}]`;
    if (!isObject(raw)) throw new ApiKeysError(`${where}: must be an object with "key" (or "sha256") and "scopes"`);
    for (const field of Object.keys(raw)) {
      if (!['key', 'sha256', 'scopes', 'name'].includes(field))
        throw new ApiKeysError(`${where}: unknown field "${field}"`);
    }
    const { key, sha256, scopes, name } = raw;
    if ((key === undefined) === (sha256 === undefined))
      throw new ApiKeysError(`${where}: give exactly one of "key" and "sha256"`);
    if (name !== undefined && (typeof name !== 'string' || name.trim() === ''))
      throw new ApiKeysError(`${where}: "name" must be a non-empty string`);
    const scopeItems = typeof scopes === 'string' ? scopes.split(',') : scopes;
    if (!Array.isArray(scopeItems) || !scopeItems.every((s): s is string => typeof s === 'string')) {
      throw new ApiKeysError(`${where}: "scopes" must be a list of ${SCOPES.join(', ')}`);
    }
    let digest: Buffer;
    if (key !== undefined) {
      if (typeof key !== 'string') throw new ApiKeysError(`${where}: "key" must be a string`);
      digest = keyDigest(key, where);
    } else {
      if (typeof sha256 !== 'string') throw new ApiKeysError(`${where}: "sha256" must be a string`);
      digest = keyDigest(sha256.startsWith('sha256:') ? sha256 : `sha256:${sha256}`, where);
    }
    return {
      name: typeof name === 'string' ? name.trim() : `keys[${i}]`,
      scopes: parseScopes(scopeItems, where),
      digest,
    };
  });
}

function parseScopes(items: readonly string[], where: string): ReadonlySet<Scope> {
  const scopes = new Set<Scope>();
  for (const raw of items) {
    const s = raw.trim();
    if (!isScope(s))
      throw new ApiKeysError(`${where}: unknown scope ${JSON.stringify(s)} (scopes: ${SCOPES.join(', ')})`);
    scopes.add(s);
  }
  if (scopes.size === 0) throw new ApiKeysError(`${where}: at least one scope is needed`);
  return scopes;
}

/** The digest of a key entry; the key itself never appears in an error. */
function keyDigest(key: string, where: string): Buffer {
  const pre = DIGEST_FORM.exec(key);
  if (pre) return Buffer.from(pre[1], 'hex');
  if (key.startsWith('sha256:')) throw new ApiKeysError(`${where}: a "sha256:" key must be followed by 64 hex digits`);
  if (!KEY_ALPHABET.test(key)) {
    throw new ApiKeysError(
      `${where}: key has characters outside A-Z a-z 0-9 - . _ ~ + / (and trailing =), which cannot travel in "authorization: Bearer"`,
    );
  }
  if (key.length < MIN_KEY_LENGTH)
    throw new ApiKeysError(`${where}: key is shorter than ${MIN_KEY_LENGTH} characters (too easy to guess)`);
  return digestOf(key);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
