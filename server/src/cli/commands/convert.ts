/**
 * `clipserve convert <open_clip dir | checkpoint file> --out <bundle dir>`: turns an open_clip
 * checkpoint (safetensors, torch .bin, or a trainer's epoch_N.pt) into a serving bundle.
 */
import type { Command } from 'commander';
import { int8Options, int8SettingsFromFlags, type Int8Flags } from '../int8-options';
import { convertCheckpoint, parsePrecisionFlag } from '../../checkpoint/convert';
import { PhaseProgress } from '../../checkpoint/progress';

interface ConvertFlags extends Int8Flags {
  out: string;
  vocab?: string;
  name?: string;
  version?: string;
  precision: string;
  config?: string;
}

export function register(program: Command): void {
  int8Options(program.command('convert'))
    .description(
      'convert an open_clip checkpoint (directory, .safetensors, .bin or epoch_N.pt) into a clipserve bundle',
    )
    .argument('<checkpoint>', 'open_clip model directory (open_clip_config.json + weights) or a checkpoint file')
    .requiredOption('-o, --out <dir>', 'bundle directory to create (must not exist or be empty)')
    .option(
      '--vocab <path>',
      "BPE vocabulary: open_clip's bpe_simple_vocab_16e6.txt.gz, a HF vocab.json (merges.txt beside it), or a directory holding either",
    )
    .option('--name <name>', 'model name recorded in the bundle (default: directory or checkpoint name)')
    .option('--version <version>', 'model version recorded in the bundle', '1')
    .option(
      '--precision <p>',
      'weight precision of the bundle: fp32, fp16 or int8 (calibrated int8 projections, docs/int8.md)',
      'fp32',
    )
    .option('--config <file>', 'open_clip_config.json to use (required for a checkpoint file without one beside it)')
    .action(async (checkpoint: string, flags: ConvertFlags) => {
      const precision = parsePrecisionFlag(flags.precision);
      const int8Settings = int8SettingsFromFlags(flags, precision);
      const progress = new PhaseProgress();
      try {
        const result = await convertCheckpoint({
          input: checkpoint,
          outDir: flags.out,
          vocab: flags.vocab,
          name: flags.name,
          version: flags.version,
          precision,
          int8Settings,
          config: flags.config,
          onProgress: progress.convert,
          onCalibration: progress.calibrate,
        });
        progress.stop();
        if (result.source.unusedKeys.length) {
          process.stderr.write(
            `note: ignored ${result.source.unusedKeys.length} checkpoint tensor(s) the model does not use: ${result.source.unusedKeys.slice(0, 5).join(', ')}\n`,
          );
        }
        process.stdout.write(`${result.outDir}\n`);
      } finally {
        progress.stop();
      }
    });
}
