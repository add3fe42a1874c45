/**
 * `clipserve bench`: the benchmark lives outside the production build (top-level bench/, built by
 * `npm run build:bench` into dist-bench/), so this command only forwards its arguments to the
 * bench build's own command (bench/command.ts), loaded when the command runs. `clipserve bench
 * --help` prints the benchmark's options; without the bench build it says how to make it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { PACKAGE_ROOT } from '../../util/paths';

/** The compiled bench command (bench/command.ts in dist-bench/). */
export const BENCH_COMMAND_MODULE = path.join(PACKAGE_ROOT, 'dist-bench', 'bench', 'command.js');

interface BenchCommandModule {
  register(program: Command): void;
}

function loadBenchCommand(): BenchCommandModule {
  if (!fs.existsSync(BENCH_COMMAND_MODULE)) {
    throw new Error(
      `the benchmark is built separately and ${BENCH_COMMAND_MODULE} is missing: run "npm run build:bench" (or "npm run bench")`,
    );
  }
  // A runtime path, not an import: production code does not depend on the bench sources.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(BENCH_COMMAND_MODULE) as BenchCommandModule;
}

export function register(program: Command): void {
  program
    .command('bench')
    .description(
      'benchmark the encoders (the limit), the served API over loopback gRPC, and the hot paths (needs "npm run build:bench"; --help lists its options)',
    )
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument('[options...]', 'the benchmark options (clipserve bench --help)')
    .action(async (args: string[]) => {
      const bench = new Command('clipserve');
      loadBenchCommand().register(bench);
      await bench.parseAsync(['bench', ...args], { from: 'user' });
    });
}
