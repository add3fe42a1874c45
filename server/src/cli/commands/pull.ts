/**
 * `clipserve pull hf-hub:<org>/<repo>[@revision]`: downloads an open_clip model and the CLIP BPE
 * vocabulary from the Hugging Face hub, converts it once into a bundle in the cache, and prints
 * the bundle path (so `--model $(clipserve pull ...)` works in scripts).
 */
import type { Command } from 'commander';
import { parsePrecisionFlag } from '../../checkpoint/convert';
import { PhaseProgress } from '../../checkpoint/progress';
import { pullModel } from '../../hub';

interface PullFlags {
  cacheDir?: string;
  vocabRepo?: string;
  precision: string;
}

export function register(program: Command): void {
  program
    .command('pull')
    .description(
      'download an open_clip model from the Hugging Face hub and convert it into a cached bundle; prints the bundle path',
    )
    .argument('<ref>', 'hf-hub:<org>/<repo>[@revision]')
    .option(
      '--cache-dir <dir>',
      "cache root, the same as serve's (default: $CLIPSERVE_CACHE_DIR, else $XDG_CACHE_HOME/clipserve, else ~/.cache/clipserve)",
      process.env.CLIPSERVE_CACHE_DIR || undefined,
    )
    .option(
      '--vocab-repo <repo>',
      'hub repo[@revision] with the CLIP vocab.json + merges.txt (default: openai/clip-vit-large-patch14)',
    )
    .option(
      '--precision <p>',
      'weight precision of the bundle: fp32, fp16 or int8 (calibrated int8 projections, docs/int8.md)',
      'fp32',
    )
    .addHelpText(
      'after',
      '\nEnvironment: HF_ENDPOINT (hub URL), HF_TOKEN (for gated/private repos), HF_HUB_OFFLINE=1 (cache only).',
    )
    .action(async (ref: string, flags: PullFlags) => {
      const precision = parsePrecisionFlag(flags.precision);
      const progress = new PhaseProgress();
      try {
        const result = await pullModel(ref, {
          cacheDir: flags.cacheDir,
          vocabRepo: flags.vocabRepo,
          precision,
          onDownload: progress.download,
          onConvert: progress.convert,
        });
        progress.stop();
        if (result.cached)
          process.stderr.write(`${ref}: bundle for commit ${result.commit.slice(0, 12)} already in the cache\n`);
        process.stdout.write(`${result.bundleDir}\n`);
      } finally {
        progress.stop();
      }
    });
}
