/**
 * Preprocessing throughput on one core: a 2000×1500 JPEG photo and a 512×512 RGBA PNG icon,
 * both generated with sharp, through preprocessImage (decode + OpenCLIP transform) at 224 px.
 * Also splits the time into decode and transform, and with --pool N runs a PreprocessPool.
 * The same measurement is part of `clipserve bench` (section hot).
 *
 *   node dist-bench/bench/preprocess-bench.js [--iterations N] [--pool N]
 */
import { resolveConfig } from '../server/src/model/config';
import { preprocessThroughput, type TimedStep } from './hot-paths';
import { makeIcon, makePhoto } from './inputs';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function line(label: string, t: TimedStep): string {
  return `${label.padEnd(44)} wall ${t.wallMs.toFixed(2).padStart(7)} ms (${(1000 / t.wallMs).toFixed(1).padStart(6)} images/s)  cpu ${t.cpuMs.toFixed(2).padStart(7)} ms (${(1000 / t.cpuMs).toFixed(1).padStart(6)} images/s)\n`;
}

async function main(): Promise<void> {
  const iterations = arg('iterations', 20);
  const poolSize = arg('pool', 0);
  const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;
  const inputs: Array<[string, Buffer]> = [
    ['2000x1500 JPEG photo', await makePhoto(2000, 1500)],
    ['512x512 RGBA PNG icon', await makeIcon(512)],
  ];
  process.stdout.write(
    `preprocess bench: size ${cfg.size}, ${iterations} iterations, node ${process.version}, sharp.concurrency(1)\n`,
  );
  for (const [name, bytes] of inputs) {
    const r = await preprocessThroughput(name, bytes, cfg, iterations, poolSize);
    process.stdout.write(line(`${name} (${(bytes.length / 1024).toFixed(0)} KiB): total`, r.total));
    process.stdout.write(line(`  decode only (mode ${r.mode})`, r.decode));
    process.stdout.write(line('  transform only (resize+crop+normalise)', r.transform));
    if (poolSize > 0)
      process.stdout.write(
        `${`pool(${poolSize}) ${name}`.padEnd(44)} ${r.poolImagesPerSec.toFixed(1).padStart(8)} images/s\n`,
      );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
