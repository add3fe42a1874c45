/**
 * A BPE merges file with exactly CLIP's vocabulary size (49408 = 256 bytes + 256 bytes with `</w>`
 * + 48894 merges + 2 special tokens), built from pairs of byte characters. The `full` method only
 * trains models whose vocabulary is that size (open_clip_train tokenizes with CLIP's BPE), so
 * tests need bases of that size without reading ../shared.
 */
import { ClipTokenizer } from '../../server/src/tokenizer';

const MERGES = 48894;

/** GPT-2 / CLIP byte → unicode table's printable characters, in their order. */
function byteChars(): string[] {
  const out: string[] = [];
  for (let c = 0x21; c <= 0x7e; c++) out.push(String.fromCharCode(c));
  for (let c = 0xa1; c <= 0xac; c++) out.push(String.fromCharCode(c));
  for (let c = 0xae; c <= 0xff; c++) out.push(String.fromCharCode(c));
  return out;
}

export function writeClipSizedVocab(file: string): void {
  const chars = byteChars();
  const lines: string[] = [];
  for (const suffix of ['', '</w>']) {
    for (const a of chars) {
      for (const b of chars) {
        if (lines.length === MERGES) break;
        lines.push(`${a} ${b}${suffix}`);
      }
    }
  }
  const tok = ClipTokenizer.fromMerges(lines);
  if (tok.vocabSize !== 49408) throw new Error(`vocabulary of ${tok.vocabSize} tokens, expected 49408`);
  tok.writeMergesFile(file);
}
