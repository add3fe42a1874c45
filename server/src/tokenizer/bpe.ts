/**
 * Byte-level BPE as OpenCLIP's SimpleTokenizer runs it: a piece's UTF-8 bytes become byte
 * symbols (the last one with `</w>`), then the adjacent pair with the lowest merge rank is
 * merged, every occurrence left to right, until no adjacent pair has a rank.
 *
 * Symbols are vocabulary ids throughout, so merging and the final lookup need no strings.
 */
import { BYTE_CHARS_IN_VOCAB_ORDER, BYTE_TO_VOCAB_INDEX } from './byte-encoder';
import { TokenizerError } from './errors';

export const END_OF_WORD = '</w>';
export const SOT_TOKEN = '<start_of_text>';
export const EOT_TOKEN = '<end_of_text>';

/** Pieces cached per tokenizer before the cache is flushed (keeps memory bounded). */
const CACHE_LIMIT = 200_000;

/**
 * The vocabulary in OpenCLIP order: 256 byte characters, the same with `</w>`, one token per
 * merge (the concatenated pair), then `<start_of_text>` and `<end_of_text>`.
 */
export function vocabularyFromMerges(merges: readonly (readonly [string, string])[]): string[] {
  const vocab = [...BYTE_CHARS_IN_VOCAB_ORDER];
  for (const ch of BYTE_CHARS_IN_VOCAB_ORDER) vocab.push(ch + END_OF_WORD);
  for (const [a, b] of merges) vocab.push(a + b);
  vocab.push(SOT_TOKEN, EOT_TOKEN);
  return vocab;
}

export class BytePairEncoder {
  readonly vocab: readonly string[];
  readonly sotId: number;
  readonly eotId: number;
  /** token string → id; a string listed twice keeps its last id, as a Python dict built by zip does. */
  private readonly encoder = new Map<string, number>();
  /** (leftId * vocabSize + rightId) → merge rank */
  private readonly ranks = new Map<number, number>();
  /** rank → id of the merged token */
  private readonly mergedId: Int32Array;
  private readonly cache = new Map<string, readonly number[]>();

  constructor(readonly merges: readonly (readonly [string, string])[]) {
    this.vocab = vocabularyFromMerges(merges);
    this.vocab.forEach((tok, id) => this.encoder.set(tok, id));
    this.sotId = this.vocab.length - 2;
    this.eotId = this.vocab.length - 1;
    this.mergedId = new Int32Array(merges.length);
    const n = this.vocab.length;
    merges.forEach(([a, b], rank) => {
      const left = this.encoder.get(a);
      const right = this.encoder.get(b);
      if (left === undefined || right === undefined) {
        throw new TokenizerError(`merge ${rank + 1} "${a} ${b}" uses a symbol that no earlier merge or byte produces`);
      }
      const key = left * n + right;
      // A pair listed twice keeps its last rank, as Python's dict(zip(merges, range(...))) does.
      this.ranks.set(key, rank);
      this.mergedId[rank] = this.encoder.get(a + b) as number;
    });
    this.cache.set(SOT_TOKEN, [this.sotId]);
    this.cache.set(EOT_TOKEN, [this.eotId]);
  }

  get size(): number {
    return this.vocab.length;
  }

  idOf(token: string): number | undefined {
    return this.encoder.get(token);
  }

  /** BPE ids of one pre-tokenized piece. */
  encodePiece(piece: string): readonly number[] {
    const hit = this.cache.get(piece);
    if (hit !== undefined) return hit;
    const ids = this.mergeSymbols(this.initialSymbols(piece));
    if (this.cache.size >= CACHE_LIMIT) {
      this.cache.clear();
      this.cache.set(SOT_TOKEN, [this.sotId]);
      this.cache.set(EOT_TOKEN, [this.eotId]);
    }
    this.cache.set(piece, ids);
    return ids;
  }

  private initialSymbols(piece: string): number[] {
    const bytes = Buffer.from(piece, 'utf8');
    if (bytes.length === 0) throw new TokenizerError('cannot BPE-encode an empty piece');
    const symbols = new Array<number>(bytes.length);
    for (let i = 0; i < bytes.length; i++) symbols[i] = BYTE_TO_VOCAB_INDEX[bytes[i]];
    symbols[bytes.length - 1] += 256; // the `</w>` form of the last byte
    return symbols;
  }

  private mergeSymbols(word: number[]): number[] {
    const n = this.vocab.length;
    while (word.length > 1) {
      let bestRank = Infinity;
      let bestLeft = -1;
      let bestRight = -1;
      for (let i = 0; i + 1 < word.length; i++) {
        const rank = this.ranks.get(word[i] * n + word[i + 1]);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestLeft = word[i];
          bestRight = word[i + 1];
        }
      }
      if (bestLeft < 0) break;
      const merged = this.mergedId[bestRank];
      const next: number[] = [];
      for (let i = 0; i < word.length; ) {
        if (word[i] === bestLeft && i + 1 < word.length && word[i + 1] === bestRight) {
          next.push(merged);
          i += 2;
        } else {
          next.push(word[i]);
          i += 1;
        }
      }
      word = next;
    }
    return word;
  }
}
