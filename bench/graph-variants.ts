/**
 * Encoder throughput through the real runtime (worker threads, onnxruntime CPU/CUDA):
 *
 *   node dist-bench/bench/graph-variants.js [--arch ViT-B-32] [--attention plain|contrib] [--patch conv|matmul]
 *                              [--level all|extended|basic|disabled] [--threads N] [--bundle DIR]
 *
 * Builds a seeded random bundle of the arch in a temp dir (unless --bundle), then prints images/s
 * at batch 1 and 8 and texts/s at batch 1 with all 77 positions in use (no EOT cut), as JSON.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeBundle } from '../server/src/model/bundle';
import { ARCH_PRESETS, resolveConfig } from '../server/src/model/config';
import { isArchName } from '../server/src/model/random-bundle';
import { randomStateDict } from '../server/src/model/random-init';
import type { AttentionImpl, PatchEmbedImpl } from '../server/src/onnx/clip-graph';
import { loadModel, type RuntimeOptions } from '../server/src/runtime/model';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function timed(reps: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  await fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  const arch = arg('arch', 'ViT-B-32');
  if (!isArchName(arch)) throw new Error(`unknown --arch ${arch}`);
  let dir = arg('bundle', '');
  let scratch: string | undefined;
  if (!dir) {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-bench-'));
    dir = path.join(scratch, 'bundle');
    // The real vocabulary size matters for the text tower's embedding table, not for speed: use a
    // tiny stand-in merges file so the bench needs no vocabulary download.
    const vocab = path.join(scratch, 'vocab.txt.gz');
    const { ClipTokenizer } = await import('../server/src/tokenizer');
    ClipTokenizer.fromMerges(['t h', 'th e</w>']).writeMergesFile(vocab);
    const tok = ClipTokenizer.fromMergesFile(vocab);
    const preset = ARCH_PRESETS[arch];
    const config = resolveConfig({
      model_cfg: { ...preset, text_cfg: { ...preset.text_cfg, vocab_size: tok.vocabSize } },
    });
    await writeBundle({
      outDir: dir,
      name: `bench-${arch}`,
      version: '1',
      config,
      stateDict: randomStateDict(config.model_cfg, 1),
      vocabFile: vocab,
      towerOptions: {
        attention: arg('attention', 'plain') as AttentionImpl,
        patchEmbed: arg('patch', 'conv') as PatchEmbedImpl,
      },
    });
  }
  const threads = Number(arg('threads', String(os.availableParallelism())));
  const opts: RuntimeOptions = {
    provider: arg('provider', 'cpu') as RuntimeOptions['provider'],
    intraOpThreads: threads,
    graphOptimizationLevel: arg('level', 'all') as RuntimeOptions['graphOptimizationLevel'],
    preprocessWorkers: 1,
  };
  const model = await loadModel(dir, opts);
  try {
    const S = model.info.imageSize;
    const ctx = model.info.contextLength;
    const px = (n: number): Float32Array => Float32Array.from({ length: n * 3 * S * S }, (_, i) => Math.sin(i));
    const p1 = px(1);
    const p8 = px(8);
    const ids = new Int32Array(ctx).fill(1);
    ids[0] = model.tokenizer.sotId;
    ids[ctx - 1] = model.tokenizer.eotId; // EOT last: all positions run
    const img1 = 20 / (await timed(20, () => model.encodeImage(p1.slice(), 1)));
    const img8 = (4 * 8) / (await timed(4, () => model.encodeImage(p8.slice(), 8)));
    const txt1 = 20 / (await timed(20, () => model.encodeText(ids, 1)));
    process.stdout.write(
      JSON.stringify({
        arch,
        ...opts,
        attention: arg('attention', 'plain'),
        patch: arg('patch', 'conv'),
        provider: model.info.provider,
        images_per_s_b1: +img1.toFixed(1),
        images_per_s_b8: +img8.toFixed(1),
        texts_per_s_b1_77: +txt1.toFixed(1),
      }) + '\n',
    );
  } finally {
    await model.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
