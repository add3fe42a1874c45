/**
 * Tokenizer throughput on one core: `node dist/bench/tokenizer-bench.js [vocab] [count]`.
 * `vocab` is any path ClipTokenizer.fromPath accepts (default: the built-in demo vocabulary).
 * Captions are generated caption-like sentences with mixed case and punctuation. Prints the
 * cold-cache pass (every piece BPE-encoded for the first time) and the steady state.
 */
import { performance } from 'node:perf_hooks';
import { ClipTokenizer, buildDemoVocab } from '../tokenizer';
import { demoCorpus } from '../tokenizer/demo-vocab';

function captions(count: number): string[] {
  // A different slice of the generator than the demo vocabulary learns from, dressed up the way
  // real captions are: sentence case, a trailing period here and there, some typographic quotes.
  return demoCorpus(count + 6000).slice(6000).map((c, i) => {
    let s = c.charAt(0).toUpperCase() + c.slice(1);
    if (i % 3 === 0) s += '.';
    if (i % 17 === 0) s = `\u201c${s}\u201d`;
    if (i % 29 === 0) s += ` #${i}`;
    return s;
  });
}

function main(): void {
  const [vocabArg, countArg] = process.argv.slice(2);
  const count = countArg ? Number(countArg) : 100_000;
  const tokenizer = vocabArg ? ClipTokenizer.fromPath(vocabArg) : ClipTokenizer.fromMerges(buildDemoVocab());
  const texts = captions(count);
  const batch = 256;
  const pass = (): number => {
    const t0 = performance.now();
    for (let i = 0; i < texts.length; i += batch) tokenizer.tokenizeBatch(texts.slice(i, i + batch));
    return (performance.now() - t0) / 1000;
  };
  const cold = pass();
  const warm = Math.min(pass(), pass());
  const avgChars = texts.reduce((n, t) => n + t.length, 0) / texts.length;
  process.stdout.write(
    `vocab: ${vocabArg ?? 'demo'} (${tokenizer.vocabSize} tokens), ${count} captions, ${avgChars.toFixed(1)} chars avg\n` +
      `cold cache: ${Math.round(count / cold)} captions/s\n` +
      `steady state: ${Math.round(count / warm)} captions/s\n`,
  );
}

main();
