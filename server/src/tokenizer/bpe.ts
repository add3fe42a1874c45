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
/** Longest piece (in UTF-16 units) kept in the cache, which bounds it to a few tens of MB. */
const CACHED_PIECE_CHARS = 64;

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
  /** rank → ids of the merge's left and right symbols, and of the merged token */
  private readonly mergeLeft: Int32Array;
  private readonly mergeRight: Int32Array;
  private readonly mergedId: Int32Array;
  private readonly cache = new Map<string, readonly number[]>();

  constructor(readonly merges: readonly (readonly [string, string])[]) {
    this.vocab = vocabularyFromMerges(merges);
    this.vocab.forEach((tok, id) => this.encoder.set(tok, id));
    this.sotId = this.vocab.length - 2;
    this.eotId = this.vocab.length - 1;
    this.mergeLeft = new Int32Array(merges.length);
    this.mergeRight = new Int32Array(merges.length);
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
      this.mergeLeft[rank] = left;
      this.mergeRight[rank] = right;
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
    // Long pieces are rare in real text and would let unique hostile texts hold megabytes each.
    if (piece.length > CACHED_PIECE_CHARS) return ids;
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

  /** Pieces longer than this (in bytes) use the heap-based merge, which is O(n log n). */
  static readonly LONG_PIECE = 48;

  private mergeSymbols(word: number[]): number[] {
    return word.length > BytePairEncoder.LONG_PIECE ? this.mergeLong(word) : this.mergeShort(word);
  }

  /**
   * OpenCLIP's loop, literally: find the adjacent pair with the lowest rank, merge every
   * occurrence left to right, repeat. Quadratic, and the fastest choice for word-sized pieces.
   */
  mergeShort(word: number[]): number[] {
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
      for (let i = 0; i < word.length;) {
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

  /**
   * The same result for long pieces (a run of letters with no spaces can be huge) without the
   * quadratic cost: symbols form a linked list and every adjacent pair with a rank sits in a
   * min-heap keyed by (rank, position). Each round takes all entries of the lowest rank, which
   * are exactly the occurrences of one pair, and merges them left to right, skipping entries
   * that earlier merges made stale, just as OpenCLIP's scan does. New adjacencies enter the heap
   * as they form, so the next round again sees the lowest-ranked pair of the current word.
   */
  mergeLong(word: number[]): number[] {
    const n = this.vocab.length;
    const len = word.length;
    const sym = Int32Array.from(word);
    const next = new Int32Array(len);
    const prev = new Int32Array(len);
    for (let i = 0; i < len; i++) {
      next[i] = i + 1 < len ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const alive = new Uint8Array(len).fill(1);
    // Entry = rank * 2^32 + position of the pair's left symbol: pops in (rank, position) order.
    const heap = new MinHeap();
    const push = (i: number): void => {
      const j = next[i];
      if (j < 0) return;
      const rank = this.ranks.get(sym[i] * n + sym[j]);
      if (rank !== undefined) heap.push(rank * 2 ** 32 + i);
    };
    for (let i = 0; i + 1 < len; i++) push(i);

    const round: number[] = [];
    while (heap.size > 0) {
      const rank = Math.floor(heap.peek() / 2 ** 32);
      round.length = 0;
      while (heap.size > 0 && Math.floor(heap.peek() / 2 ** 32) === rank) round.push(heap.pop() % 2 ** 32);
      const left = this.mergeLeft[rank];
      const right = this.mergeRight[rank];
      const merged = this.mergedId[rank];
      for (const i of round) {
        const j = next[i];
        if (!alive[i] || j < 0 || sym[i] !== left || sym[j] !== right) continue; // stale
        sym[i] = merged;
        alive[j] = 0;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        if (prev[i] >= 0) push(prev[i]);
        push(i);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }
}

/** A binary min-heap of non-negative integers (below 2^53). */
class MinHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): number {
    return this.items[0];
  }

  push(value: number): void {
    const a = this.items;
    let i = a.push(value) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent] <= value) break;
      a[i] = a[parent];
      i = parent;
    }
    a[i] = value;
  }

  pop(): number {
    const a = this.items;
    const top = a[0];
    const last = a.pop() as number;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r] < a[l] ? r : l;
        if (a[c] >= last) break;
        a[i] = a[c];
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}
