/**
 * OpenCLIP tokenizer parity: every golden case (ids, and the cleaned text, pieces and BPE ids to
 * localise a failure), the Hugging Face vocab.json + merges.txt path, and framing rules.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { ClipTokenizer, TokenizerError, VocabFileError, fixText } from '../../server/src/tokenizer';
import { BytePairEncoder } from '../../server/src/tokenizer/bpe';
import { BYTE_TO_VOCAB_INDEX } from '../../server/src/tokenizer/byte-encoder';
import { splitPieces } from '../../server/src/tokenizer/clean';
import { readMergesFile } from '../../server/src/tokenizer/vocab-files';
import { describeGolden, goldenPath } from '../helpers/shared';

interface GoldenCase {
  id: string;
  category: string;
  text: string;
  ids: number[];
  ftfy: string;
  clean: string;
  pieces: string[];
  bpe: number[];
  n_bpe: number;
  truncated: boolean;
}

function loadCases(): GoldenCase[] {
  return fs
    .readFileSync(goldenPath('tokenizer', 'cases.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as GoldenCase);
}

/** GPT-2 bytes_to_unicode, written out independently of the code under test. */
function byteChars(): { byteToChar: string[]; vocabOrder: string[] } {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const byteToChar: string[] = new Array(256);
  bs.forEach((b, i) => (byteToChar[b] = String.fromCharCode(cs[i])));
  return { byteToChar, vocabOrder: cs.map((c) => String.fromCharCode(c)) };
}

/** Writes vocab.json + merges.txt laid out as Hugging Face's openai/clip-vit-large-patch14. */
function writeHfFiles(dir: string, mergeLines: string[], mutate?: (vocab: Record<string, number>) => void): void {
  const { vocabOrder } = byteChars();
  const tokens = [...vocabOrder, ...vocabOrder.map((c) => c + '</w>'), ...mergeLines.map((m) => m.replace(' ', ''))];
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] = i));
  vocab['<|startoftext|>'] = tokens.length;
  vocab['<|endoftext|>'] = tokens.length + 1;
  mutate?.(vocab);
  fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(vocab));
  fs.writeFileSync(path.join(dir, 'merges.txt'), ['#version: 0.2', ...mergeLines].join('\n') + '\n');
}

function goldenMergeLines(): string[] {
  const text = zlib
    .gunzipSync(fs.readFileSync(goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz')))
    .toString('utf8');
  return text.split('\n').slice(1, 49152 - 256 - 2 + 1);
}

describeGolden('ClipTokenizer vs open_clip golden cases', () => {
  const cases = loadCases();
  const tok = ClipTokenizer.fromMergesFile(goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz'));

  it('has the OpenCLIP vocabulary shape', () => {
    const meta = JSON.parse(fs.readFileSync(goldenPath('tokenizer', 'tokenizer_meta.json'), 'utf8'));
    expect(cases).toHaveLength(402);
    expect(tok.vocabSize).toBe(meta.vocab_size);
    expect(tok.sotId).toBe(meta.sot_token_id);
    expect(tok.eotId).toBe(meta.eot_token_id);
    expect(tok.idToToken(0)).toBe('!');
  });

  it('matches every stage of every case', () => {
    const perCategory = new Map<string, { pass: number; fail: number }>();
    const failures: string[] = [];
    for (const c of cases) {
      const stages: string[] = [];
      if (fixText(c.text) !== c.ftfy) stages.push('ftfy');
      const clean = tok.clean(c.text);
      if (clean !== c.clean) stages.push('clean');
      if (JSON.stringify(splitPieces(c.clean)) !== JSON.stringify(c.pieces)) stages.push('pieces');
      if (JSON.stringify(tok.encode(c.text)) !== JSON.stringify(c.bpe)) stages.push('bpe');
      const row = tok.tokenize(c.text);
      if (JSON.stringify(Array.from(row.ids)) !== JSON.stringify(c.ids)) stages.push('ids');
      if (row.truncated !== c.truncated) stages.push('truncated');
      const stat = perCategory.get(c.category) ?? { pass: 0, fail: 0 };
      if (stages.length === 0) stat.pass++;
      else {
        stat.fail++;
        failures.push(`${c.id} [${c.category}] ${stages.join(',')}: ${JSON.stringify(c.text).slice(0, 120)}`);
      }
      perCategory.set(c.category, stat);
    }
    const summary = [...perCategory.entries()].map(([k, v]) => `${k} ${v.pass}/${v.pass + v.fail}`).join(', ');
    console.log(`tokenizer golden cases per category: ${summary}`);
    expect(failures).toEqual([]);
  });

  it('tokenizeBatch gives the same rows, flags and pooling index as tokenize', () => {
    const subset = cases.filter((_, i) => i % 7 === 0);
    const batch = tok.tokenizeBatch(subset.map((c) => c.text));
    expect(batch.ids).toHaveLength(subset.length * 77);
    subset.forEach((c, i) => {
      expect(Array.from(batch.ids.subarray(i * 77, (i + 1) * 77))).toEqual(c.ids);
      expect(batch.truncated[i]).toBe(c.truncated);
      // open_clip pools the text tower at argmax(ids): the first occurrence of the largest id.
      expect(batch.eotIndex[i]).toBe(c.ids.indexOf(Math.max(...c.ids)));
    });
  });

  it('frames, truncates and pads for other context lengths', () => {
    const long = cases.find((c) => c.n_bpe > 20 && !c.bpe.includes(tok.eotId) && !c.bpe.includes(tok.sotId));
    expect(long).toBeDefined();
    const c = long as GoldenCase;
    const short = tok.tokenize(c.text, 10);
    expect(Array.from(short.ids)).toEqual([tok.sotId, ...c.bpe.slice(0, 8), tok.eotId]);
    expect(short.truncated).toBe(true);
    expect(short.eotIndex).toBe(9);
    const wide = tok.tokenize(c.text, c.n_bpe + 5);
    expect(Array.from(wide.ids)).toEqual([tok.sotId, ...c.bpe, tok.eotId, 0, 0, 0]);
    expect(wide.truncated).toBe(false);
    expect(wide.eotIndex).toBe(c.n_bpe + 1);
    expect(() => tok.tokenize('x', 1)).toThrow(TokenizerError);
    expect(() => tok.tokenizeBatch(['x'], 7.5)).toThrow(TokenizerError);
  });

  it("merges long pieces (heap-based) exactly as OpenCLIP's literal loop", () => {
    const bpe = new BytePairEncoder(readMergesFile(goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz')));
    const texts = cases.map((c) => c.clean.replace(/[^\p{L}]/gu, '')).filter((t) => Buffer.byteLength(t) > 10);
    texts.push('a'.repeat(500), 'ab'.repeat(300), 'photographsofcats'.repeat(20));
    for (const text of texts) {
      const ids = Array.from(Buffer.from(text, 'utf8'), (b) => BYTE_TO_VOCAB_INDEX[b]);
      ids[ids.length - 1] += 256;
      expect(bpe.mergeLong([...ids])).toEqual(bpe.mergeShort([...ids]));
    }
  });

  it('loads Hugging Face vocab.json + merges.txt and tokenizes identically', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-hf-'));
    try {
      writeHfFiles(dir, goldenMergeLines());
      const hf = ClipTokenizer.fromHuggingFace(path.join(dir, 'vocab.json'), path.join(dir, 'merges.txt'));
      expect(hf.vocabSize).toBe(49408);
      expect(hf.sotId).toBe(49406);
      expect(hf.eotId).toBe(49407);
      const batch = hf.tokenizeBatch(cases.map((c) => c.text));
      cases.forEach((c, i) => expect(Array.from(batch.ids.subarray(i * 77, (i + 1) * 77))).toEqual(c.ids));
      // The same pair is found from the directory or from either file.
      expect(ClipTokenizer.fromPath(dir).tokenize('a photo of a cat').ids).toEqual(hf.tokenize('a photo of a cat').ids);
      expect(ClipTokenizer.fromPath(path.join(dir, 'vocab.json')).vocabSize).toBe(49408);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a vocab.json whose ids disagree with the merges order', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-hfbad-'));
    const lines = goldenMergeLines();
    const load = (): ClipTokenizer =>
      ClipTokenizer.fromHuggingFace(path.join(dir, 'vocab.json'), path.join(dir, 'merges.txt'));
    try {
      writeHfFiles(dir, lines, (v) => {
        const a = v['the</w>'];
        v['the</w>'] = v['cat</w>'];
        v['cat</w>'] = a;
      });
      expect(load).toThrow(VocabFileError);
      expect(load).toThrow(/the merges order gives/);
      writeHfFiles(dir, lines, (v) => delete v['<|endoftext|>']);
      expect(load).toThrow(/tokens but .* implies/);
      writeHfFiles(dir, lines.slice(0, 1000));
      fs.writeFileSync(path.join(dir, 'merges.txt'), ['#version: 0.2', ...lines.slice(0, 999)].join('\n'));
      expect(load).toThrow(VocabFileError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('ClipTokenizer vocabulary errors', () => {
  it('reports unreadable or malformed merges files clearly', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-bad-'));
    try {
      expect(() => ClipTokenizer.fromMergesFile(path.join(dir, 'missing.txt.gz'))).toThrow(/cannot read/);
      fs.writeFileSync(path.join(dir, 'bad.txt'), 'header\nh e\nthree parts here\n');
      expect(() => ClipTokenizer.fromMergesFile(path.join(dir, 'bad.txt'))).toThrow(/merge line 2 is not "left right"/);
      fs.writeFileSync(path.join(dir, 'empty.txt'), 'header only\n');
      expect(() => ClipTokenizer.fromMergesFile(path.join(dir, 'empty.txt'))).toThrow(/no merges/);
      fs.writeFileSync(path.join(dir, 'orphan.txt'), 'header\nab c\n');
      expect(() => ClipTokenizer.fromMergesFile(path.join(dir, 'orphan.txt'))).toThrow(/uses a symbol/);
      expect(() => ClipTokenizer.fromPath(path.join(dir, 'nope'))).toThrow(VocabFileError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
