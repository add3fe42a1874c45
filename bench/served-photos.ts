/**
 * Served large-photo throughput of two (or more) builds side by side: each build's own
 * `clipserve serve` (its dist/cli/main.js) over loopback gRPC, driven by this build's load
 * generator (the SDK, one child process) with single-image EmbedImage calls of 2000×1500 and
 * 4000×3000 (12 MP) JPEGs. Builds alternate within every round and the order flips each round, so
 * a busy machine slows both alike; every run is printed, then the best per build.
 *
 * It also shows whether the images of one batch are preprocessed while the previous batch runs:
 * per run, the encoder's busy share of the wall time (batch runs × mean run time, from the
 * server's own histograms) beside the server's CPU; when inference is busy most of the time and
 * the photos are still decoded at the served rate, decoding happened during the runs.
 *
 *   npm run bench:served-photos -- --builds before=/path/to/old/worktree,after=. \
 *     [--models tiny,ViT-B-32] [--photos 2000x1500,4000x3000] [--rounds 3] [--seconds 8]
 *     [--concurrency 16] [--threads N] [--cache-dir DIR]
 *
 * A build's directory needs `npm run build` done (dist/cli/main.js); the model bundles are this
 * build's seeded random-weight bench bundles (./bundles), read by every build.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import type { ArchName } from '../server/src/model/config';
import { PACKAGE_ROOT } from '../server/src/util/paths';
import { ensureBenchBundle, parseArch } from './bundles';
import { makePhoto } from './inputs';
import { defaultBenchDirs } from './run';
import { LoadGenerator, runServed, type ServedResult } from './server-bench';
import { ServerProcess } from './server-process';

interface Options {
  builds: Array<{ name: string; cli: string }>;
  models: ArchName[];
  photos: Array<[number, number]>;
  rounds: number;
  seconds: number;
  concurrency: number;
  threads: number;
  cacheDir: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    builds: [{ name: 'this', cli: path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js') }],
    models: ['tiny', 'ViT-B-32'],
    photos: [
      [2000, 1500],
      [4000, 3000],
    ],
    rounds: 3,
    seconds: 8,
    concurrency: 16,
    threads: os.cpus().length,
    cacheDir: defaultBenchDirs().cacheDir,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--builds') {
      o.builds = v()
        .split(',')
        .map((spec) => {
          const [name, dir] = spec.includes('=') ? spec.split('=') : [path.basename(path.resolve(spec)), spec];
          return { name, cli: path.join(path.resolve(dir), 'dist', 'cli', 'main.js') };
        });
    } else if (a === '--models') o.models = v().split(',').map(parseArch);
    else if (a === '--photos') {
      o.photos = v()
        .split(',')
        .map((s) => {
          const m = /^(\d+)x(\d+)$/.exec(s);
          if (!m) throw new Error(`--photos takes WxH sizes, got ${s}`);
          return [Number(m[1]), Number(m[2])];
        });
    } else if (a === '--rounds') o.rounds = Number(v());
    else if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--concurrency') o.concurrency = Number(v());
    else if (a === '--threads') o.threads = Number(v());
    else if (a === '--cache-dir') o.cacheDir = path.resolve(v());
    else throw new Error(`unknown argument ${a} (see the comment at the top of served-photos.ts)`);
  }
  for (const [k, n] of Object.entries({
    rounds: o.rounds,
    seconds: o.seconds,
    concurrency: o.concurrency,
    threads: o.threads,
  })) {
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`--${k} must be a positive integer`);
  }
  return o;
}

interface Run {
  round: number;
  build: string;
  model: ArchName;
  photo: string;
  result: ServedResult;
  /** share of the wall time the encoder was running a batch */
  inferenceBusy: number;
  load: number;
}

const f = (x: number, d = 1): string => x.toFixed(d);

function line(r: Run): string {
  const b = r.result.breakdown;
  const cpuMsPerImage = (r.result.serverCpuCores / r.result.itemsPerSec) * 1000;
  return `| ${r.round + 1} | ${r.model} | ${r.photo} | ${r.build} | ${f(r.result.itemsPerSec)} | ${f(r.result.serverCpuCores, 2)} | ${f(cpuMsPerImage)} | ${f(b.meanBatchSize)} | ${f(b.meanInferenceMs)} | ${f(r.inferenceBusy * 100, 0)} % | ${r.result.errors} | ${f(r.load)} |`;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const log = (msg: string): void => void process.stderr.write(`${msg}\n`);
  const photos = await Promise.all(
    o.photos.map(async ([w, h]) => ({ label: `${w}×${h} JPEG`, bytes: await makePhoto(w, h, 80) })),
  );
  const bundles = new Map<ArchName, string>();
  for (const m of o.models) bundles.set(m, (await ensureBenchBundle(m, o.cacheDir, log)).dir);
  process.stdout.write(
    `served photos: ${o.builds.map((b) => `${b.name} (${b.cli})`).join(' vs ')}; ${o.rounds} rounds, builds alternating, order flipped each round; ` +
      `${o.concurrency} single-image callers, ${o.seconds} s windows, --intra-op-threads ${o.threads}, ${os.cpus().length} CPUs\n` +
      `photos: ${photos.map((p) => `${p.label} ${(p.bytes.length / 1024).toFixed(0)} KiB`).join(', ')}\n\n` +
      '| round | model | photo | build | images/s | server CPU (cores) | server CPU ms / image | mean batch | mean run ms | encoder busy | errors | load avg |\n' +
      '|---|---|---|---|---|---|---|---|---|---|---|---|\n',
  );
  const gen = await LoadGenerator.start();
  const runs: Run[] = [];
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const model of o.models) {
        const order = round % 2 === 0 ? o.builds : [...o.builds].reverse();
        for (const build of order) {
          const server = await ServerProcess.start({
            model: bundles.get(model)!,
            provider: 'cpu',
            intraOpThreads: o.threads,
            maxBatchSize: 32,
            cli: build.cli,
          });
          try {
            for (const photo of photos) {
              const warmupSeconds = 3;
              const t0 = performance.now();
              const result = await runServed(
                server,
                gen,
                'on',
                { kind: 'image', concurrency: o.concurrency, image: photo },
                { warmupSeconds, seconds: o.seconds },
                [],
              );
              const wall = (performance.now() - t0) / 1000;
              const b = result.breakdown;
              const run: Run = {
                round,
                build: build.name,
                model,
                photo: photo.label,
                result,
                inferenceBusy: (b.runs * b.meanInferenceMs) / 1000 / wall,
                load: os.loadavg()[0],
              };
              runs.push(run);
              process.stdout.write(`${line(run)}\n`);
            }
          } finally {
            await server.stop();
          }
        }
      }
    }
  } finally {
    await gen.close();
  }
  process.stdout.write('\nbest of the rounds (images/s):\n');
  for (const model of o.models) {
    for (const photo of photos) {
      const cells = o.builds.map((b) => {
        const rates = runs
          .filter((r) => r.model === model && r.photo === photo.label && r.build === b.name)
          .map((r) => r.result.itemsPerSec);
        return `${b.name} ${f(Math.max(...rates))} (runs: ${rates.map((x) => f(x)).join(', ')})`;
      });
      process.stdout.write(`  ${model} ${photo.label}: ${cells.join(' | ')}\n`);
    }
  }
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
