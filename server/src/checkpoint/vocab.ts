/**
 * Finds and loads the BPE vocabulary a converted bundle ships with. Two layouts exist:
 *  - open_clip's merges file `bpe_simple_vocab_16e6.txt.gz` (or an uncompressed .txt);
 *  - Hugging Face's `vocab.json` + `merges.txt` pair, as hub repos ship it.
 * `--vocab` may name the merges file, the vocab.json (merges.txt beside it) or a directory holding
 * either layout. Without it, the checkpoint's own directory is searched the same way. The bundle
 * always stores the merges-file form, so an HF pair is re-written as one.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipTokenizer } from '../tokenizer';
import { CheckpointError } from './errors';

export const OPENCLIP_VOCAB_FILE = 'bpe_simple_vocab_16e6.txt.gz';
export const HF_VOCAB_FILE = 'vocab.json';
export const HF_MERGES_FILE = 'merges.txt';

export type VocabSource =
  { kind: 'merges'; mergesFile: string } | { kind: 'huggingface'; vocabJson: string; mergesTxt: string };

export interface LoadedVocab {
  source: VocabSource;
  tokenizer: ClipTokenizer;
  /** A merges-format file for the bundle (a temporary file for the HF layout). */
  mergesFile: string;
  /** Removes the temporary merges file, if one was written. */
  cleanup(): void;
}

function describe(src: VocabSource): string {
  return src.kind === 'merges' ? src.mergesFile : `${src.vocabJson} + ${src.mergesTxt}`;
}

/** Looks for a vocabulary in `dir`, open_clip layout first. */
export function findVocabInDir(dir: string): VocabSource | undefined {
  const merges = path.join(dir, OPENCLIP_VOCAB_FILE);
  if (fs.existsSync(merges)) return { kind: 'merges', mergesFile: merges };
  const vocabJson = path.join(dir, HF_VOCAB_FILE);
  const mergesTxt = path.join(dir, HF_MERGES_FILE);
  if (fs.existsSync(vocabJson) && fs.existsSync(mergesTxt)) return { kind: 'huggingface', vocabJson, mergesTxt };
  return undefined;
}

/** Interprets a `--vocab` argument. */
export function vocabSourceFromArg(arg: string): VocabSource {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(arg);
  } catch {
    throw new CheckpointError('vocabulary file or directory not found', arg);
  }
  if (stat.isDirectory()) {
    const found = findVocabInDir(arg);
    if (!found)
      throw new CheckpointError(
        `directory holds neither ${OPENCLIP_VOCAB_FILE} nor ${HF_VOCAB_FILE} + ${HF_MERGES_FILE}`,
        arg,
      );
    return found;
  }
  if (arg.toLowerCase().endsWith('.json')) {
    const mergesTxt = path.join(path.dirname(arg), HF_MERGES_FILE);
    if (!fs.existsSync(mergesTxt))
      throw new CheckpointError(`a Hugging Face vocab.json needs ${HF_MERGES_FILE} beside it`, arg);
    return { kind: 'huggingface', vocabJson: arg, mergesTxt };
  }
  return { kind: 'merges', mergesFile: arg };
}

export function resolveVocabSource(vocabArg: string | undefined, checkpointDir: string): VocabSource {
  if (vocabArg) return vocabSourceFromArg(vocabArg);
  const found = findVocabInDir(checkpointDir);
  if (found) return found;
  throw new CheckpointError(
    `no tokenizer vocabulary found beside the checkpoint (looked for ${OPENCLIP_VOCAB_FILE}, or ${HF_VOCAB_FILE} + ${HF_MERGES_FILE}); ` +
      `pass --vocab with open_clip's ${OPENCLIP_VOCAB_FILE}, a Hugging Face vocab.json (with merges.txt beside it) or a directory holding them`,
    checkpointDir,
  );
}

function isGzip(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(2);
    return fs.readSync(fd, head, 0, 2, 0) === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    fs.closeSync(fd);
  }
}

/** Loads the vocabulary and checks it has the number of tokens the text tower embeds. */
export async function loadVocab(source: VocabSource, expectedVocabSize: number): Promise<LoadedVocab> {
  let tokenizer: ClipTokenizer;
  let mergesFile: string;
  let tmpDir: string | undefined;
  if (source.kind === 'merges') {
    tokenizer = ClipTokenizer.fromMergesFile(source.mergesFile);
    mergesFile = source.mergesFile;
  } else {
    tokenizer = ClipTokenizer.fromHuggingFace(source.vocabJson, source.mergesTxt);
    mergesFile = '';
  }
  // Bundles store the gzip merges form: HF pairs and plain-text merges files are re-written.
  if (source.kind === 'huggingface' || !isGzip(source.mergesFile)) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-vocab-'));
    mergesFile = path.join(tmpDir, OPENCLIP_VOCAB_FILE);
    tokenizer.writeMergesFile(mergesFile);
  }
  const cleanup = (): void => {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  };
  if (tokenizer.vocabSize !== expectedVocabSize) {
    cleanup();
    throw new CheckpointError(
      `vocabulary has ${tokenizer.vocabSize} tokens but the model's text_cfg.vocab_size is ${expectedVocabSize}; use the vocabulary the model was trained with`,
      describe(source),
    );
  }
  return { source, tokenizer, mergesFile, cleanup };
}
