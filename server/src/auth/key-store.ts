/**
 * The keys the server accepts, held only as SHA-256 digests. A presented key is hashed and then
 * compared with EVERY stored digest by crypto.timingSafeEqual, without stopping at a match, so the
 * time taken reveals neither how much of a key was right nor which entry matched. (Hashing first
 * also gives every comparison the same length, which timingSafeEqual requires.)
 */
import { timingSafeEqual } from 'node:crypto';
import { ApiKeyEntry, digestOf } from './key-file';
import type { Scope } from './scopes';

export interface ApiKeyIdentity {
  /** The key's name from the key list (never the key). */
  name: string;
  scopes: ReadonlySet<Scope>;
}

export class ApiKeyStore {
  private readonly entries: readonly ApiKeyEntry[];

  constructor(entries: readonly ApiKeyEntry[]) {
    this.entries = entries.map((e) => ({ name: e.name, scopes: new Set(e.scopes), digest: Buffer.from(e.digest) }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** The identity the key belongs to, or undefined for an unknown key. */
  authenticate(presentedKey: string): ApiKeyIdentity | undefined {
    const digest = digestOf(presentedKey);
    let found: ApiKeyEntry | undefined;
    for (const entry of this.entries) {
      // No early exit: every entry is compared whatever the outcome.
      if (timingSafeEqual(entry.digest, digest) && found === undefined) found = entry;
    }
    return found ? { name: found.name, scopes: found.scopes } : undefined;
  }
}
