/**
 * `clipserve bench`: the performance benchmark (bench/run.ts), also `npm run bench`.
 * Not a test: it prints tables and writes bench/results/<date>-<host>.json and an SVG chart.
 * The benchmark is built apart from the server (bench/tsconfig.json → dist-bench/); the server's
 * CLI loads this file from there when `clipserve bench` runs (server/src/cli/commands/bench.ts).
 */
import * as os from 'node:os';
import { Command, Option } from 'commander';
import { BenchConfigError, parseArch } from './bundles';
import { defaultBenchDirs, runBench, SECTIONS, type Section } from './run';

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positiveInts(flag: string, v: string): number[] {
  const out = list(v).map(Number);
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1))
    throw new BenchConfigError(`${flag} takes a comma-separated list of positive integers, got ${JSON.stringify(v)}`);
  return out;
}

export function register(program: Command): void {
  const dirs = defaultBenchDirs();
  program
    .command('bench')
    .description('benchmark the encoders (the limit), the served API over loopback gRPC, and the hot paths')
    .option(
      '--models <list>',
      'bench bundles: tiny, ViT-B-32, ViT-L-14 (ViT-L-14 is slow: only when asked)',
      'tiny,ViT-B-32',
    )
    .option('--sections <list>', `sections to run: ${SECTIONS.join(', ')}`, SECTIONS.join(','))
    .option('--quick', 'short durations and a 1/8/64 concurrency sweep (for checking the bench itself)', false)
    .addOption(
      new Option('--provider <name>', 'onnxruntime execution provider for the raw limit and the server')
        .choices(['cpu', 'cuda'])
        .default('cpu'),
    )
    .option('--threads <n>', 'intra-op threads of the raw sessions and the server', String(os.availableParallelism()))
    .option('--seconds <s>', 'seconds per measurement (overrides the plan)')
    .option('--concurrency <list>', 'concurrency sweep, e.g. 1,8,64 (overrides the plan)')
    .option('--batch-sizes <list>', 'raw batch sizes, e.g. 1,8,32,64 (overrides the plan)')
    .option(
      '--server-max-batch-size <n>',
      "the served server's --max-batch-size with batching on (default: the server's default)",
    )
    .option('--max-queue-delay-ms <ms>', "the served server's --max-queue-delay-ms (default: the server's default)")
    .option('--cache-dir <dir>', 'where bench bundles are built and reused', dirs.cacheDir)
    .option('--out-dir <dir>', 'where results JSON and chart are written', dirs.outDir)
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const sections = list(String(o.sections)).map((s) => {
        if (!(SECTIONS as readonly string[]).includes(s))
          throw new BenchConfigError(`unknown section ${JSON.stringify(s)} (expected ${SECTIONS.join(', ')})`);
        return s as Section;
      });
      const threads = Number(o.threads);
      if (!Number.isInteger(threads) || threads < 1)
        throw new BenchConfigError(`--threads must be a positive integer, got ${o.threads}`);
      const seconds = o.seconds === undefined ? undefined : Number(o.seconds);
      if (seconds !== undefined && !(seconds > 0))
        throw new BenchConfigError(`--seconds must be a positive number, got ${o.seconds}`);
      const delay = o.maxQueueDelayMs === undefined ? undefined : Number(o.maxQueueDelayMs);
      if (delay !== undefined && !(delay >= 0))
        throw new BenchConfigError(`--max-queue-delay-ms must be a number >= 0, got ${o.maxQueueDelayMs}`);
      const { jsonPath, chartPath } = await runBench({
        models: list(String(o.models)).map(parseArch),
        sections,
        quick: Boolean(o.quick),
        provider: o.provider as 'cpu' | 'cuda',
        threads,
        cacheDir: String(o.cacheDir),
        outDir: String(o.outDir),
        ...(seconds ? { seconds } : {}),
        ...(delay !== undefined ? { maxQueueDelayMs: delay } : {}),
        ...(o.serverMaxBatchSize
          ? { serverMaxBatchSize: positiveInts('--server-max-batch-size', String(o.serverMaxBatchSize))[0] }
          : {}),
        ...(o.concurrency ? { concurrency: positiveInts('--concurrency', String(o.concurrency)) } : {}),
        ...(o.batchSizes ? { batchSizes: positiveInts('--batch-sizes', String(o.batchSizes)) } : {}),
        log: (m) => process.stderr.write(`${m}\n`),
      });
      process.stdout.write(`\nresults: ${jsonPath}${chartPath ? `\nchart: ${chartPath}` : ''}\n`);
    });
}
