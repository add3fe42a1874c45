/**
 * Which tower the int8 retrieval drift comes from (docs/int8.md), on the bundles that
 * `int8-accuracy.js --sections retrieval --keep DIR` left in DIR/retrieval/fold-N:
 *
 *   node dist-bench/bench/int8-retrieval-towers.js --dir DIR [--fold N] [--int8 int8-shifted-gelu-served,...]
 *
 * Encodes the 600 held-out pairs once with the fp32 bundle and once with each int8 bundle, then
 * scores every mix (int8 images against fp32 captions and the reverse) with the same metrics as
 * the accuracy script, and prints the per-sample cosine of each tower's int8 features to fp32.
 */
import * as path from 'node:path';
import { iconVariantDataset } from '../server/src/eval/icon-set';
import { clipMetrics, DIRECTIONS, RECALL_KS, type RetrievalMetrics } from '../server/src/eval/metrics';
import { l2normalize } from '../server/src/inference/heads';
import { cosineSummary, rowCosines } from '../server/src/model/int8';
import { encodePairs } from './retrieval-features';
import { heldOutSplit } from './retrieval-split';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function main(): Promise<void> {
  const fold = Number(arg('fold', '0'));
  const root = path.join(path.resolve(arg('dir', '')), 'retrieval', `fold-${fold}`);
  const int8Dirs = arg('int8', 'int8-shifted-gelu-served').split(',');
  const { evaluated } = heldOutSplit(await iconVariantDataset(), fold);
  const pairs = evaluated.map((p, i) => ({ image: path.join(root, 'eval', `${i}.png`), caption: p.caption }));
  const keys = DIRECTIONS.flatMap((d) => RECALL_KS.map((k) => `${d}_R@${k}` as keyof RetrievalMetrics));
  const fp32 = await encodePairs(path.join(root, 'job', 'bundle'), pairs); // where the adapter job wrote the fine-tuned version
  const n = pairs.length;
  const d = fp32.dim;
  const score = (img: Float32Array, txt: Float32Array) =>
    clipMetrics(l2normalize(img, d), l2normalize(txt, d), n, d, fp32.logitScale).metrics;
  const base = score(fp32.image, fp32.text);
  const pct = (m: RetrievalMetrics) => Object.fromEntries(keys.map((k) => [k, +(100 * m[k]).toFixed(2)]));
  const diff = (m: RetrievalMetrics) => Object.fromEntries(keys.map((k) => [k, +(100 * (m[k] - base[k])).toFixed(2)]));
  process.stdout.write(
    JSON.stringify({ mix: 'fp32 images, fp32 captions', pairs: n, recall_percent: pct(base) }) + '\n',
  );
  for (const name of int8Dirs) {
    const q = await encodePairs(path.join(root, name), pairs);
    process.stdout.write(
      JSON.stringify({
        bundle: name,
        image_cosine_to_fp32: cosineSummary(rowCosines(q.image, fp32.image, d)),
        text_cosine_to_fp32: cosineSummary(rowCosines(q.text, fp32.text, d)),
      }) + '\n',
    );
    for (const [mix, img, txt] of [
      ['int8 images, fp32 captions', q.image, fp32.text],
      ['fp32 images, int8 captions', fp32.image, q.text],
      ['int8 images, int8 captions', q.image, q.text],
    ] as const) {
      const m = score(img, txt);
      process.stdout.write(
        JSON.stringify({ bundle: name, mix, recall_percent: pct(m), difference_points: diff(m) }) + '\n',
      );
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`int8-retrieval-towers: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
