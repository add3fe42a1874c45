/**
 * Where the server's API keys come from: `--api-keys-file` and/or CLIPSERVE_API_KEYS (the union of
 * both). The file is read again every `reloadIntervalMs` and, when its content changed and parses,
 * replaces the keys in place, so keys rotate without a restart (a Kubernetes Secret update reaches
 * the mounted file within about a minute). A file that becomes unreadable or invalid keeps the last
 * good keys and logs why: a bad edit must not lock every client out, or let everyone in.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { ApiKeysError } from './errors';
import { ApiKeyEntry, parseApiKeys, repeatedKey } from './key-file';
import { ApiKeyStore } from './key-store';

export interface ApiKeySourceOptions {
  /** Path of the key file (text or JSON format, see key-file.ts). */
  file?: string;
  /** The CLIPSERVE_API_KEYS value (text format; entries separated by newlines or `;`). */
  envValue?: string;
  /** How often the file is checked for changes; 0 or undefined: never. */
  reloadIntervalMs?: number;
  logger?: Logger;
}

export class ApiKeySource {
  private current: ApiKeyStore;
  private fileDigest: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly envEntries: readonly ApiKeyEntry[];

  /** Reads and checks every configured key; throws ApiKeysError naming the bad entry. */
  constructor(private readonly opts: ApiKeySourceOptions) {
    if (opts.file === undefined && opts.envValue === undefined) throw new ApiKeysError('no API keys configured: give --api-keys-file or CLIPSERVE_API_KEYS');
    this.envEntries = opts.envValue !== undefined ? parseApiKeys(opts.envValue, 'CLIPSERVE_API_KEYS') : [];
    let fileEntries: ApiKeyEntry[] = [];
    if (opts.file !== undefined) {
      const text = readKeyFile(opts.file);
      fileEntries = parseApiKeys(text, `--api-keys-file ${opts.file}`);
      this.fileDigest = contentDigest(text);
    }
    this.current = this.combine(fileEntries);
    if (opts.file !== undefined && opts.reloadIntervalMs) {
      this.timer = setInterval(() => this.reload(), opts.reloadIntervalMs);
      this.timer.unref();
    }
  }

  /** The keys in force now. */
  get store(): ApiKeyStore {
    return this.current;
  }

  /**
   * Re-reads the key file now; true when new keys took effect. Called by the timer; callable
   * directly (e.g. on SIGHUP or from a test).
   */
  reload(): boolean {
    const file = this.opts.file;
    if (file === undefined) return false;
    try {
      const text = readKeyFile(file);
      const digest = contentDigest(text);
      if (digest === this.fileDigest) return false;
      const next = this.combine(parseApiKeys(text, `--api-keys-file ${file}`));
      this.current = next;
      this.fileDigest = digest;
      this.opts.logger?.info({ file, keys: next.size }, 'API keys reloaded');
      return true;
    } catch (err) {
      this.opts.logger?.error({ file, reason: err instanceof Error ? err.message : String(err) }, 'API key file not reloaded: keeping the previous keys');
      return false;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private combine(fileEntries: readonly ApiKeyEntry[]): ApiKeyStore {
    const all = [...fileEntries, ...this.envEntries];
    const twin = repeatedKey(all);
    if (twin) throw new ApiKeysError(`the same key appears twice: ${twin.first} and ${twin.second}`);
    if (all.length === 0) throw new ApiKeysError('the API key list is empty: every call would be refused (remove the option to serve without keys)');
    return new ApiKeyStore(all);
  }
}

function readKeyFile(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ApiKeysError(`cannot read --api-keys-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err))}`);
  }
}

function contentDigest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
