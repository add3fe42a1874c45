/**
 * Where the server's API keys come from: `--api-keys-file` and/or CLIPSERVE_API_KEYS (the union of
 * both). The file is read again every `reloadIntervalMs` and, when its content changed and parses,
 * replaces the keys in place, so keys rotate without a restart (a Kubernetes Secret update reaches
 * the mounted file within about a minute). A file that becomes unreadable or invalid (deleted,
 * emptied, a directory, comments only, a typo on one line) is counted (`observer`, the
 * clipserve_credentials_reload_errors_total metric) and logged, and then, by `onReloadFailure`:
 *  - keep (default): the last good keys stay in force, so a bad edit does not lock every client
 *    out; but a revocation that came with the bad edit has not happened, hence the alert;
 *  - deny: every keyed call is refused (UNAVAILABLE) until a reload succeeds: fail closed.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import type { Logger } from 'pino';
import { ApiKeysError } from './errors';
import { ApiKeyEntry, parseApiKeys, repeatedKey } from './key-file';
import type { ReloadObserver } from '../metrics/credentials-metrics';
import { ApiKeyStore } from './key-store';

export type ReloadFailurePolicy = 'keep' | 'deny';

export interface ApiKeySourceOptions {
  /** Path of the key file (text or JSON format, see key-file.ts). */
  file?: string;
  /** The CLIPSERVE_API_KEYS value (text format; entries separated by newlines or `;`). */
  envValue?: string;
  /** How often the file is checked for changes; 0 or undefined: never. */
  reloadIntervalMs?: number;
  logger?: Logger;
  /** What a failed reload does (see the top of this file). Default keep. */
  onReloadFailure?: ReloadFailurePolicy;
  /** Told the outcome of every check of the file (metrics). */
  observer?: ReloadObserver;
}

export class ApiKeySource {
  private current: ApiKeyStore;
  private fileDigest: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly envEntries: readonly ApiKeyEntry[];
  /** Why keyed calls are refused now (deny policy after a failed reload); undefined when they are not. */
  private denyReason: string | undefined;

  /** Reads and checks every configured key; throws ApiKeysError naming the bad entry. */
  constructor(private readonly opts: ApiKeySourceOptions) {
    if (opts.file === undefined && opts.envValue === undefined)
      throw new ApiKeysError('no API keys configured: give --api-keys-file or CLIPSERVE_API_KEYS');
    this.envEntries = opts.envValue !== undefined ? parseApiKeys(opts.envValue, 'CLIPSERVE_API_KEYS') : [];
    let fileEntries: ApiKeyEntry[] = [];
    if (opts.file !== undefined) {
      const text = readKeyFile(opts.file);
      fileEntries = parseApiKeys(text, `--api-keys-file ${opts.file}`);
      this.fileDigest = contentDigest(text);
    }
    this.current = this.combine(fileEntries);
    opts.observer?.reloadSucceeded();
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
      if (digest === this.fileDigest) {
        this.succeeded(file);
        return false;
      }
      const next = this.combine(parseApiKeys(text, `--api-keys-file ${file}`));
      this.current = next;
      this.fileDigest = digest;
      this.opts.logger?.info({ file, keys: next.size }, 'API keys reloaded');
      this.succeeded(file);
      return true;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.opts.observer?.reloadFailed();
      if (this.opts.onReloadFailure === 'deny') {
        this.denyReason =
          'the server cannot read its API keys (the key file failed to reload): keyed calls are refused until it is fixed';
        this.opts.logger?.error(
          { file, reason },
          'API key file not reloaded: refusing every keyed call until a reload succeeds (--auth-reload-failure=deny)',
        );
      } else {
        this.opts.logger?.error(
          { file, reason },
          'API key file not reloaded: keeping the previous keys (--auth-reload-failure=keep)',
        );
      }
      return false;
    }
  }

  /**
   * Why every keyed call is refused now, or undefined: set by a failed reload under the deny
   * policy, cleared by the next good one.
   */
  get refusal(): string | undefined {
    return this.denyReason;
  }

  private succeeded(file: string): void {
    if (this.denyReason !== undefined)
      this.opts.logger?.info({ file }, 'API key file readable again: keyed calls accepted');
    this.denyReason = undefined;
    this.opts.observer?.reloadSucceeded();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private combine(fileEntries: readonly ApiKeyEntry[]): ApiKeyStore {
    const all = [...fileEntries, ...this.envEntries];
    const twin = repeatedKey(all);
    if (twin) throw new ApiKeysError(`the same key appears twice: ${twin.first} and ${twin.second}`);
    if (all.length === 0)
      throw new ApiKeysError(
        'the API key list is empty: every call would be refused (remove the option to serve without keys)',
      );
    return new ApiKeyStore(all);
  }
}

function readKeyFile(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ApiKeysError(
      `cannot read --api-keys-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err))}`,
    );
  }
}

function contentDigest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
