/** The built-in demo vocabulary: deterministic, same file format and code path as the real one. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { ClipTokenizer, DEMO_VOCAB_SIZE, buildDemoVocab } from '../../../server/src/tokenizer';
import { BytePairEncoder } from '../../../server/src/tokenizer/bpe';
import { BYTE_TO_CHAR, BYTE_TO_VOCAB_INDEX } from '../../../server/src/tokenizer/byte-encoder';
import { parseMergeLines } from '../../../server/src/tokenizer/vocab-files';
import { splitPieces } from '../../../server/src/tokenizer/clean';

const TEXTS = [
  'A photo of a cat sitting on a red sofa.',
  'an ICON of a shopping cart, flat design — 2024 edition',
  'Ünïcödé café, naïve jalapeño & crème brûlée',
  '日本語のテキスト and emoji 😀🎉',
  "it's a <start_of_text> test with <END_OF_TEXT> inside",
  '',
];

/** Inverse of the byte-level encoding: ids → the pieces of the cleaned text, space-separated. */
function decode(tok: ClipTokenizer, ids: number[]): string {
  const charToByte = new Map(BYTE_TO_CHAR.map((ch, b) => [ch, b]));
  const text = ids.map((id) => tok.idToToken(id) ?? '').join('');
  const bytes: number[] = [];
  for (const part of text.split('</w>')) {
    for (const ch of part) bytes.push(charToByte.get(ch) as number);
    bytes.push(0x20);
  }
  return Buffer.from(bytes).toString('utf8').replace(/ +/g, ' ').trim();
}

describe('demo vocabulary', () => {
  const merges = buildDemoVocab();
  const tok = ClipTokenizer.fromMerges(merges);

  it('is deterministic and has the advertised size, sot/eot last', () => {
    expect(buildDemoVocab()).toEqual(merges);
    expect(merges).toHaveLength(DEMO_VOCAB_SIZE - 514);
    expect(new Set(merges.map((m) => m.replace(' ', ''))).size).toBe(merges.length);
    expect(tok.vocabSize).toBe(DEMO_VOCAB_SIZE);
    expect(tok.sotId).toBe(DEMO_VOCAB_SIZE - 2);
    expect(tok.eotId).toBe(DEMO_VOCAB_SIZE - 1);
    // Caption words are learned as whole tokens.
    expect(tok.encode('a photo of a cat').map((id) => tok.idToToken(id))).toEqual([
      'a</w>',
      'photo</w>',
      'of</w>',
      'a</w>',
      'cat</w>',
    ]);
  });

  it('round-trips through the gzip merges file format', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-demo-'));
    try {
      const file = path.join(dir, 'demo_vocab.txt.gz');
      tok.writeMergesFile(file);
      const raw = fs.readFileSync(file);
      expect([raw[0], raw[1]]).toEqual([0x1f, 0x8b]);
      const lines = zlib.gunzipSync(raw).toString('utf8').split('\n');
      expect(lines.slice(1, 1 + merges.length)).toEqual(merges);
      const back = ClipTokenizer.fromMergesFile(file);
      expect(back.vocabSize).toBe(DEMO_VOCAB_SIZE);
      expect(Array.from(back.tokenizeBatch(TEXTS).ids)).toEqual(Array.from(tok.tokenizeBatch(TEXTS).ids));
      expect(ClipTokenizer.fromPath(dir).vocabSize).toBe(DEMO_VOCAB_SIZE);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('encodes any text losslessly (byte fallback) and maps special tokens', () => {
    for (const text of TEXTS) {
      const ids = tok.encode(text);
      for (const id of ids) expect(id).toBeLessThan(DEMO_VOCAB_SIZE);
      const specials = ids.filter((id) => id >= tok.sotId);
      if (text.includes('<start_of_text>')) expect(specials).toEqual([tok.sotId, tok.eotId]);
      else expect(decode(tok, ids)).toBe(splitPieces(tok.clean(text)).join(' '));
    }
    const row = tok.tokenize(TEXTS[4]);
    expect(row.eotIndex).toBe(Array.from(row.ids).indexOf(tok.eotId));
    expect(row.eotIndex).toBeLessThan(Array.from(row.ids).lastIndexOf(tok.eotId));
  });
});

describe('BPE merge strategies', () => {
  /** Deterministic mix of pieces: repeated letters, caption words glued together, random bytes. */
  function pieces(): number[][] {
    let x = 987654321;
    const rnd = (k: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % k;
    };
    const words = ['photo', 'of', 'a', 'cat', 'the', 'background', 'aaaa', 'abab', 'ing', 'ssss', 'é', '日本'];
    const out: string[] = ['a'.repeat(200), 'ab'.repeat(150), 'aab'.repeat(90)];
    for (let i = 0; i < 150; i++) {
      let s = '';
      const target = 49 + rnd(300);
      while (s.length < target) s += rnd(3) === 0 ? String.fromCharCode(97 + rnd(26)) : words[rnd(words.length)];
      out.push(s);
    }
    return out.map((s) => {
      const bytes = Buffer.from(s, 'utf8');
      const ids = Array.from(bytes, (b) => BYTE_TO_VOCAB_INDEX[b]);
      ids[ids.length - 1] += 256;
      return ids;
    });
  }

  it("the heap-based merge for long pieces equals OpenCLIP's literal loop", () => {
    const bpe = new BytePairEncoder(parseMergeLines(buildDemoVocab()));
    for (const word of pieces()) expect(bpe.mergeLong([...word])).toEqual(bpe.mergeShort([...word]));
  });
});
