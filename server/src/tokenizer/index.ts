/**
 * OpenCLIP-exact tokenizer: `open_clip.tokenizer.SimpleTokenizer` with `clean='lower'`
 * (what `open_clip.tokenize` and `get_tokenizer('ViT-L-14')` use), on a byte-level BPE
 * vocabulary loaded from OpenCLIP's merges file, Hugging Face's vocab.json + merges.txt, or a
 * merges list (such as the built-in demo vocabulary).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BytePairEncoder } from './bpe';
import { cleanText, iteratePieces, splitPieces } from './clean';
import { TokenizerError, VocabFileError } from './errors';
import { Merge, parseMergeLines, readHuggingFaceFiles, readMergesFile, writeMergesFile } from './vocab-files';

export { buildDemoVocab, DEMO_VOCAB_SIZE, DEMO_MERGE_COUNT } from './demo-vocab';
export { fixText } from './ftfy';
export { htmlUnescape } from './html-unescape';
export { TokenizerError, VocabFileError } from './errors';
export { MAX_MERGES } from './vocab-files';

/** OpenCLIP's default context length (CLIP text towers have 77 positions). */
export const DEFAULT_CONTEXT_LENGTH = 77;

export interface TokenizedText {
  /** sot + BPE ids + eot, truncated and zero-padded to the context length. */
  ids: Int32Array;
  /** true when the BPE ids did not all fit (eot then takes the last slot). */
  truncated: boolean;
  /** Where the text tower pools: the first position holding the largest id (= the first eot). */
  eotIndex: number;
}

export interface TokenizedBatch {
  /** Row-major [texts.length, contextLength]. */
  ids: Int32Array;
  truncated: boolean[];
  eotIndex: Int32Array;
}

function checkContextLength(contextLength: number): void {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new TokenizerError(`contextLength must be an integer >= 2 (room for sot and eot), got ${contextLength}`);
  }
}

export class ClipTokenizer {
  readonly vocabSize: number;
  readonly sotId: number;
  readonly eotId: number;
  private readonly bpe: BytePairEncoder;

  private constructor(private readonly merges: readonly Merge[]) {
    this.bpe = new BytePairEncoder(merges);
    this.vocabSize = this.bpe.size;
    this.sotId = this.bpe.sotId;
    this.eotId = this.bpe.eotId;
  }

  /** OpenCLIP's merges file (`bpe_simple_vocab_16e6.txt.gz`), gzip or plain text. */
  static fromMergesFile(file: string): ClipTokenizer {
    return new ClipTokenizer(readMergesFile(file));
  }

  /** Hugging Face CLIPTokenizer files; vocab.json ids must agree with the merges order. */
  static fromHuggingFace(vocabJsonPath: string, mergesTxtPath: string): ClipTokenizer {
    return new ClipTokenizer(readHuggingFaceFiles(vocabJsonPath, mergesTxtPath));
  }

  /** Merge lines ("left right"), header excluded. */
  static fromMerges(merges: string[]): ClipTokenizer {
    return new ClipTokenizer(parseMergeLines(merges));
  }

  /**
   * Opens whatever vocabulary `location` names: a merges file (.txt.gz / .txt), a directory
   * holding vocab.json + merges.txt (or a single merges file), or a vocab.json / merges.txt path
   * whose partner sits next to it.
   */
  static fromPath(location: string): ClipTokenizer {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(location);
    } catch {
      throw new VocabFileError(location, 'no such file or directory');
    }
    const dir = stat.isDirectory() ? location : path.dirname(location);
    const base = stat.isDirectory() ? '' : path.basename(location);
    const vocabJson = path.join(dir, 'vocab.json');
    const mergesTxt = path.join(dir, 'merges.txt');
    if (
      (stat.isDirectory() || base === 'vocab.json' || base === 'merges.txt') &&
      fs.existsSync(vocabJson) &&
      fs.existsSync(mergesTxt)
    ) {
      return ClipTokenizer.fromHuggingFace(vocabJson, mergesTxt);
    }
    if (!stat.isDirectory()) return ClipTokenizer.fromMergesFile(location);
    const candidates = fs.readdirSync(location).filter((f) => /\.txt(\.gz)?$/.test(f) && f !== 'merges.txt');
    if (candidates.length === 1) return ClipTokenizer.fromMergesFile(path.join(location, candidates[0]));
    throw new VocabFileError(
      location,
      'expected vocab.json + merges.txt, or exactly one OpenCLIP merges file (*.txt.gz / *.txt) in the directory',
    );
  }

  /** The full cleaning stage: ftfy, HTML unescape twice, whitespace collapse, lower-case. */
  clean(text: string): string {
    return cleanText(text);
  }

  /** BPE ids of clean(text): no sot/eot, no truncation. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of splitPieces(cleanText(text))) {
      for (const id of this.bpe.encodePiece(piece)) ids.push(id);
    }
    return ids;
  }

  tokenize(text: string, contextLength = DEFAULT_CONTEXT_LENGTH): TokenizedText {
    checkContextLength(contextLength);
    const ids = new Int32Array(contextLength);
    const { truncated, eotIndex } = this.fillRow(text, ids);
    return { ids, truncated, eotIndex };
  }

  tokenizeBatch(texts: string[], contextLength = DEFAULT_CONTEXT_LENGTH): TokenizedBatch {
    checkContextLength(contextLength);
    const ids = new Int32Array(texts.length * contextLength);
    const truncated: boolean[] = new Array(texts.length);
    const eotIndex = new Int32Array(texts.length);
    texts.forEach((text, i) => {
      const row = this.fillRow(text, ids.subarray(i * contextLength, (i + 1) * contextLength));
      truncated[i] = row.truncated;
      eotIndex[i] = row.eotIndex;
    });
    return { ids, truncated, eotIndex };
  }

  /** The vocabulary in OpenCLIP's gzip merges format (header line + merges). */
  writeMergesFile(file: string): void {
    writeMergesFile(file, this.merges);
  }

  /** Token string of an id (byte-level characters, `</w>` marks a word end). */
  idToToken(id: number): string | undefined {
    return this.bpe.vocab[id];
  }

  /**
   * OpenCLIP framing: [sot] + bpe + [eot]; when that exceeds the row, keep the first
   * `row.length` tokens and put eot in the last slot. The rest stays 0 (the row is zeroed).
   */
  private fillRow(text: string, row: Int32Array): { truncated: boolean; eotIndex: number } {
    if (typeof text !== 'string') throw new TokenizerError(`expected a string to tokenize, got ${typeof text}`);
    const ctx = row.length;
    // Only as many pieces are encoded as can reach the row: open_clip encodes every piece, then
    // keeps the first ctx - 2 ids. Each piece's ids depend on that piece alone (BPE never merges
    // across pieces), so the ids of the pieces before the cut are the same either way, and one id
    // past the row is enough to know the text was cut. Exactly open_clip's result, at a cost
    // bounded by the context length instead of the text length (cleaning still sees the whole
    // text: ftfy decides per line from the whole line).
    const room = ctx - 2;
    const bpe: number[] = [];
    for (const piece of iteratePieces(cleanText(text))) {
      for (const id of this.bpe.encodePiece(piece)) bpe.push(id);
      if (bpe.length > room) break;
    }
    const truncated = bpe.length > room;
    const kept = truncated ? room : bpe.length;
    row[0] = this.sotId;
    for (let i = 0; i < kept; i++) row[i + 1] = bpe[i];
    row[kept + 1] = this.eotId;
    // The text tower pools at argmax(ids): the first occurrence of the largest id.
    let eotIndex = 0;
    for (let i = 1; i <= kept + 1; i++) if (row[i] > row[eotIndex]) eotIndex = i;
    return { truncated, eotIndex };
  }
}
