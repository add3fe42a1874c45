/**
 * `clipserve init-model --arch <tiny|ViT-B-32|ViT-L-14> --seed N --out <dir>`: a bundle with seeded
 * random weights (open_clip's initialisation), for demos, load tests and benchmarks.
 */
import type { Command } from 'commander';
import { int8Options, int8SettingsFromFlags, type Int8Flags } from '../int8-options';
import { SingleBar, Presets } from 'cli-progress';
import { parsePrecisionFlag } from '../../checkpoint/convert';
import { ARCH_PRESETS } from '../../model/config';
import { isArchName, writeRandomBundle } from '../../model/random-bundle';

interface InitFlags extends Int8Flags {
  arch: string;
  seed: string;
  out: string;
  vocab?: string;
  precision: string;
  name?: string;
}

export function register(program: Command): void {
  int8Options(program.command('init-model'))
    .description('create a model bundle with seeded random weights')
    .requiredOption('--arch <arch>', `architecture: ${Object.keys(ARCH_PRESETS).join(', ')}`)
    .option('--seed <n>', 'random seed (integer 0..2^32-1)', '0')
    .requiredOption('-o, --out <dir>', 'bundle directory to create (must not exist or be empty)')
    .option('--vocab <file>', 'gzip BPE merges file (default: the small demo vocabulary)')
    .option(
      '--precision <p>',
      'weight precision: fp32, fp16 or int8 (calibrated int8 projections, docs/int8.md)',
      'fp32',
    )
    .option('--name <name>', 'model name recorded in the bundle (default: random-<arch>)')
    .action(async (flags: InitFlags) => {
      if (!isArchName(flags.arch))
        throw new Error(`--arch must be one of ${Object.keys(ARCH_PRESETS).join(', ')}, got "${flags.arch}"`);
      if (!/^\d+$/.test(flags.seed) || Number(flags.seed) > 0xffffffff)
        throw new Error(`--seed must be an integer in [0, 4294967295], got "${flags.seed}"`);
      const precision = parsePrecisionFlag(flags.precision);
      const int8Settings = int8SettingsFromFlags(flags, precision);
      const bar = new SingleBar(
        { format: '{phase} [{bar}] {percentage}% | {value}/{total} {unit}', stream: process.stderr, hideCursor: true },
        Presets.shades_classic,
      );
      let phase = '';
      const started = Date.now();
      const manifest = await writeRandomBundle({
        arch: flags.arch,
        seed: Number(flags.seed),
        outDir: flags.out,
        vocabFile: flags.vocab,
        precision,
        int8Settings,
        name: flags.name,
        onProgress: (p, done, total) => {
          const label = p === 'init' ? 'initialising' : p === 'write' ? 'writing     ' : 'calibrating ';
          const unit = p === 'init' ? 'params' : p === 'write' ? 'MiB' : 'samples';
          const scale = p === 'write' ? 1 / 2 ** 20 : 1;
          if (p !== phase) {
            if (phase) bar.stop();
            phase = p;
            bar.start(Math.round(total * scale), 0, { phase: label, unit });
          }
          bar.update(Math.round(done * scale), { phase: label, unit });
        },
      });
      if (phase) bar.stop();
      const f = manifest.files;
      const bytes = [f.visual, f.visual_data, f.textual, f.textual_data, f.vocab].reduce(
        (s, r) => s + (r?.bytes ?? 0),
        0,
      );
      process.stdout.write(
        `wrote ${manifest.name} (${flags.arch}, seed ${flags.seed}, ${manifest.precision}) to ${flags.out}: ` +
          `${(bytes / 2 ** 20).toFixed(1)} MiB in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
      );
    });
}
