/**
 * Tokenizer throughput on one core: `node dist-bench/bench/tokenizer-bench.js [vocab] [count]`.
 * `vocab` is any path ClipTokenizer.fromPath accepts (default: the built-in demo vocabulary).
 * Captions are generated caption-like sentences with mixed case and punctuation. Prints the
 * cold-cache pass (every piece BPE-encoded for the first time) and the steady state.
 * The same measurement is part of `clipserve bench` (section hot).
 */
import { ClipTokenizer, buildDemoVocab } from '../server/src/tokenizer';
import { tokenizerThroughput } from './hot-paths';
import { benchCaptions } from './inputs';

function main(): void {
  const [vocabArg, countArg] = process.argv.slice(2);
  const count = countArg ? Number(countArg) : 100_000;
  const tokenizer = vocabArg ? ClipTokenizer.fromPath(vocabArg) : ClipTokenizer.fromMerges(buildDemoVocab());
  const r = tokenizerThroughput(tokenizer, benchCaptions(count));
  process.stdout.write(
    `vocab: ${vocabArg ?? 'demo'} (${tokenizer.vocabSize} tokens), ${count} captions, ${r.avgChars.toFixed(1)} chars avg\n` +
      `cold cache: ${Math.round(r.coldPerSec)} captions/s\n` +
      `steady state: ${Math.round(r.steadyPerSec)} captions/s\n`,
  );
}

main();
