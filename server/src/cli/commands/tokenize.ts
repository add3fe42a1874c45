/**
 * `clipserve tokenize [--vocab FILE | --model BUNDLE] [--json]`: OpenCLIP-exact tokenization of
 * stdin, one text per line (with --json: one JSON string per line, so texts may hold newlines),
 * printing one JSON array of context-length ids per line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Command } from 'commander';
import { resolveModelRef } from '../../hub';
import { ClipTokenizer, DEFAULT_CONTEXT_LENGTH } from '../../tokenizer';

interface TokenizeFlags {
  vocab?: string;
  model?: string;
  json?: boolean;
  contextLength?: string;
}

interface TokenizerChoice {
  tokenizer: ClipTokenizer;
  contextLength: number;
}

/** Reads the vocabulary path and context length from a bundle's clipserve.json manifest. */
function fromBundle(bundleDir: string): TokenizerChoice {
  const manifestPath = path.join(bundleDir, 'clipserve.json');
  let manifest: unknown;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read bundle manifest ${manifestPath}: ${(err as Error).message}`);
  }
  const m = manifest as {
    files?: { vocab?: { path?: unknown } };
    model_cfg?: { text_cfg?: { context_length?: unknown } };
  };
  const vocabRel = m.files?.vocab?.path;
  if (typeof vocabRel !== 'string' || vocabRel === '') {
    throw new Error(`${manifestPath} has no "files.vocab.path" string`);
  }
  const ctx = m.model_cfg?.text_cfg?.context_length ?? DEFAULT_CONTEXT_LENGTH;
  if (typeof ctx !== 'number' || !Number.isInteger(ctx) || ctx < 2) {
    throw new Error(`${manifestPath}: "model_cfg.text_cfg.context_length" must be an integer >= 2`);
  }
  return { tokenizer: ClipTokenizer.fromPath(path.resolve(bundleDir, vocabRel)), contextLength: ctx };
}

function chooseTokenizer(flags: TokenizeFlags): TokenizerChoice {
  if (flags.vocab !== undefined && flags.model !== undefined) {
    throw new Error('give either --vocab or --model, not both');
  }
  let choice: TokenizerChoice;
  if (flags.model !== undefined) choice = fromBundle(flags.model);
  else if (flags.vocab !== undefined)
    choice = { tokenizer: ClipTokenizer.fromPath(flags.vocab), contextLength: DEFAULT_CONTEXT_LENGTH };
  else {
    throw new Error(
      "no vocabulary: pass --vocab with open_clip's bpe_simple_vocab_16e6.txt.gz (or a directory / vocab.json with " +
        'merges.txt beside it), or --model with a clipserve bundle directory',
    );
  }
  if (flags.contextLength !== undefined) {
    const n = Number(flags.contextLength);
    if (!Number.isInteger(n) || n < 2)
      throw new Error(`--context-length must be an integer >= 2, got "${flags.contextLength}"`);
    choice.contextLength = n;
  }
  return choice;
}

function parseLine(line: string, lineNo: number, json: boolean): string {
  if (!json) return line;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new Error(`stdin line ${lineNo}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'string') throw new Error(`stdin line ${lineNo}: expected a JSON string, got ${typeof value}`);
  return value;
}

async function run(flags: TokenizeFlags): Promise<void> {
  const { tokenizer, contextLength } = chooseTokenizer(flags);
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let lineNo = 0;
  let out = '';
  const flush = async (): Promise<void> => {
    if (out === '') return;
    const chunk = out;
    out = '';
    if (!process.stdout.write(chunk)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
  };
  for await (const line of rl) {
    lineNo++;
    if (flags.json && line.trim() === '') continue; // blank separator lines carry no JSON value
    const { ids } = tokenizer.tokenize(parseLine(line, lineNo, flags.json === true), contextLength);
    out += `[${ids.join(',')}]\n`;
    if (out.length > 1 << 16) await flush();
  }
  await flush();
}

export function register(program: Command): void {
  program
    .command('tokenize')
    .description('tokenize stdin exactly as open_clip does (one text per line) and print one JSON id array per line')
    .option(
      '--vocab <path>',
      "BPE vocabulary: open_clip's bpe_simple_vocab_16e6.txt.gz, or vocab.json + merges.txt (a directory or either file)",
    )
    .option(
      '--model <ref>',
      'clipserve bundle directory or hf-hub:<org>/<repo>[@revision]: use its vocabulary and context length',
    )
    .option('--json', 'each stdin line is a JSON string (so texts may contain newlines)')
    .option('--context-length <n>', `ids per row (default: the bundle's, else ${DEFAULT_CONTEXT_LENGTH})`)
    .action(async (flags: TokenizeFlags) => {
      // hf-hub: references are pulled and converted once, then read from the cache.
      await run(flags.model !== undefined ? { ...flags, model: await resolveModelRef(flags.model) } : flags);
    });
}
