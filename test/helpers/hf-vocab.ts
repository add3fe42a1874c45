import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { ClipTokenizer } from '../../server/src/tokenizer';

/** Writes Hugging Face CLIPTokenizer files (vocab.json + merges.txt) equivalent to `tok`, with
 *  HF's names for the special tokens, as hub repos such as openai/clip-vit-large-patch14 ship them. */
export function writeHuggingFaceVocab(tok: ClipTokenizer, dir: string): { vocabJson: string; mergesTxt: string } {
  const vocab: Record<string, number> = {};
  for (let id = 0; id < tok.vocabSize; id++) {
    const name = id === tok.sotId ? '<|startoftext|>' : id === tok.eotId ? '<|endoftext|>' : tok.idToToken(id)!;
    vocab[name] = id;
  }
  const gz = path.join(dir, `.merges-${process.pid}.txt.gz`);
  tok.writeMergesFile(gz);
  const merges = zlib.gunzipSync(fs.readFileSync(gz)).toString('utf8');
  fs.rmSync(gz);
  const vocabJson = path.join(dir, 'vocab.json');
  const mergesTxt = path.join(dir, 'merges.txt');
  fs.writeFileSync(vocabJson, JSON.stringify(vocab));
  fs.writeFileSync(mergesTxt, merges);
  return { vocabJson, mergesTxt };
}
