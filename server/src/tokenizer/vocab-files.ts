/**
 * Reading and writing BPE vocabularies: OpenCLIP's gzip merges file
 * (`bpe_simple_vocab_16e6.txt.gz`) and Hugging Face's `vocab.json` + `merges.txt` pair.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { EOT_TOKEN, SOT_TOKEN, vocabularyFromMerges } from './bpe';
import { VocabFileError } from './errors';

/**
 * OpenCLIP (and HF's CLIPTokenizer) use merge lines [1, 49152-256-2+1): a 49408-token vocabulary.
 * Files may hold more merges than that (the OpenCLIP file does); the rest are ignored.
 */
export const MAX_MERGES = 49152 - 256 - 2;

/** Hugging Face's names for the special tokens. */
const HF_SOT = '<|startoftext|>';
const HF_EOT = '<|endoftext|>';

export type Merge = readonly [string, string];

function readText(file: string): string {
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch (err) {
    throw new VocabFileError(file, `cannot read: ${(err as Error).message}`);
  }
  // gzip magic number, whatever the file is called
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      raw = zlib.gunzipSync(raw);
    } catch (err) {
      throw new VocabFileError(file, `corrupt gzip data: ${(err as Error).message}`);
    }
  }
  return raw.toString('utf8');
}

/**
 * Parses merge lines ("left right", header excluded). Blank lines at the very end are ignored;
 * anything else that is not two space-separated symbols is an error.
 */
export function parseMergeLines(lines: readonly string[], source = 'merges'): Merge[] {
  let end = lines.length;
  while (end > 0 && lines[end - 1].trim() === '') end--;
  const merges: Merge[] = [];
  for (let i = 0; i < Math.min(end, MAX_MERGES); i++) {
    const parts = lines[i].split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw new VocabFileError(source, `merge line ${i + 1} is not "left right": ${JSON.stringify(lines[i])}`);
    }
    merges.push([parts[0], parts[1]]);
  }
  if (merges.length === 0) throw new VocabFileError(source, 'no merges found');
  return merges;
}

/** An OpenCLIP merges file, gzip or plain text: a header line, then one merge per line. */
export function readMergesFile(file: string): Merge[] {
  const lines = readText(file).split(/\r?\n/);
  return parseMergeLines(lines.slice(1), file);
}

/** Writes merges in OpenCLIP's format: gzip (unless the name does not end in .gz), header first. */
export function writeMergesFile(file: string, merges: readonly Merge[]): void {
  const text = ['#version: 0.2', ...merges.map(([a, b]) => `${a} ${b}`)].join('\n') + '\n';
  const data = file.endsWith('.gz')
    ? zlib.gzipSync(Buffer.from(text, 'utf8'), { level: 9 })
    : Buffer.from(text, 'utf8');
  fs.writeFileSync(file, data);
}

/**
 * Hugging Face CLIP tokenizer files. The ids in vocab.json must be exactly the ones the merges
 * imply (bytes, bytes + </w>, one token per merge, then the two special tokens), because the
 * tokenizer derives ids from the merges; anything else would silently give wrong embeddings.
 */
export function readHuggingFaceFiles(vocabJsonPath: string, mergesTxtPath: string): Merge[] {
  const lines = readText(mergesTxtPath).split(/\r?\n/);
  const start = lines.length > 0 && lines[0].startsWith('#version') ? 1 : 0;
  const merges = parseMergeLines(lines.slice(start), mergesTxtPath);

  let vocabJson: unknown;
  try {
    vocabJson = JSON.parse(readText(vocabJsonPath));
  } catch (err) {
    if (err instanceof VocabFileError) throw err;
    throw new VocabFileError(vocabJsonPath, `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof vocabJson !== 'object' || vocabJson === null || Array.isArray(vocabJson)) {
    throw new VocabFileError(vocabJsonPath, 'expected a JSON object of token → id');
  }
  const hf = vocabJson as Record<string, unknown>;
  const derived = vocabularyFromMerges(merges);
  const expectedId = new Map<string, number>();
  derived.forEach((tok, id) => expectedId.set(tok, id));
  const sotId = derived.length - 2;
  const eotId = derived.length - 1;

  const entries = Object.entries(hf);
  if (entries.length !== expectedId.size) {
    throw new VocabFileError(
      vocabJsonPath,
      `has ${entries.length} tokens but ${mergesTxtPath} implies ${expectedId.size} (${merges.length} merges + 512 byte tokens + 2 special)`,
    );
  }
  for (const [tok, id] of entries) {
    let want = expectedId.get(tok);
    if (tok === HF_SOT) want = sotId;
    if (tok === HF_EOT) want = eotId;
    if (want === undefined)
      throw new VocabFileError(vocabJsonPath, `token ${JSON.stringify(tok)} is not produced by the merges`);
    if (id !== want) {
      throw new VocabFileError(
        vocabJsonPath,
        `token ${JSON.stringify(tok)} has id ${String(id)}, but the merges order gives ${want}`,
      );
    }
  }
  for (const [names, id] of [
    [[HF_SOT, SOT_TOKEN], sotId],
    [[HF_EOT, EOT_TOKEN], eotId],
  ] as const) {
    if (!names.some((n) => hf[n] === id)) {
      throw new VocabFileError(vocabJsonPath, `missing special token ${names[0]} with id ${id}`);
    }
  }
  return merges;
}
