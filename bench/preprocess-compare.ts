/**
 * clipserve's preprocessing against open_clip's own eval transform (Pillow + torchvision), on the
 * same files, in the same run, one thread each: `npm run bench:preprocess`.
 *
 * Inputs: a 512×512 RGB PNG, a 512×512 RGBA PNG and a 2000×1500 JPEG, generated deterministically
 * (or your own files: --files a.png,b.jpg). For every round and file the two sides run N images
 * each, back to back, the order flipping every round so neither always runs first on a busy
 * machine; a side's figure is its best round. Each side reports wall and CPU time per image (one
 * thread: sharp.concurrency(1), torch.set_num_threads(1)); the ratio that matters is per core, so
 * CPU time, with wall time beside it. clipserve also runs with its TypeScript resample passes (the
 * reference the WebAssembly kernel is tested against) and is split into decode and transform.
 * The tensors of both sides are hashed: "same bits" means bit-identical output.
 *
 *   node dist-bench/bench/preprocess-compare.js [--images N] [--rounds R] [--files a,b,c] [--no-pil]
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { resolveConfig, type PreprocessConfig } from '../server/src/model/config';
import { DEFAULT_IMAGE_LIMITS, preprocessImage } from '../server/src/preprocess';
import { decodeImage, type DecodedImage } from '../server/src/preprocess/decode';
import { setSimdKernels } from '../server/src/preprocess/simd/instance';
import { transformImage } from '../server/src/preprocess/transform';
import { makePhoto, makePhotoPng } from './inputs';
import { findReferencePython, PilReference, type ReferenceTiming } from './pil-reference';

interface Options {
  images: number;
  rounds: number;
  files?: string[];
  pil: boolean;
}

function parseArgs(argv: string[]): Options {
  const opt: Options = { images: 20, rounds: 3, pil: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--images') opt.images = Number(argv[++i]);
    else if (a === '--rounds') opt.rounds = Number(argv[++i]);
    else if (a === '--files') opt.files = argv[++i].split(',');
    else if (a === '--no-pil') opt.pil = false;
    else throw new Error(`unknown argument ${a} (see the comment at the top of preprocess-compare.ts)`);
  }
  if (!(opt.images >= 1) || !(opt.rounds >= 1)) throw new Error('--images and --rounds must be at least 1');
  return opt;
}

interface Timing {
  wall: number;
  cpu: number;
}

/** Per-image wall and process-CPU seconds of n calls (after one warm-up call). */
async function timeN(n: number, fn: () => unknown): Promise<Timing> {
  await fn();
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  const wall = (performance.now() - w0) / 1000 / n;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6 / n };
}

const best = (a: Timing | undefined, b: Timing): Timing =>
  a ? { wall: Math.min(a.wall, b.wall), cpu: Math.min(a.cpu, b.cpu) } : b;

async function inputFiles(opt: Options): Promise<string[]> {
  if (opt.files) return opt.files.map((f) => path.resolve(f));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-preprocess-bench-'));
  const made: Array<[string, Buffer]> = [
    ['rgb_512x512.png', await makePhotoPng(512, false)],
    ['rgba_512x512.png', await makePhotoPng(512, true)],
    ['photo_2000x1500.jpg', await makePhoto(2000, 1500, 80)],
  ];
  return made.map(([name, bytes]) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    return file;
  });
}

interface Row {
  file: string;
  bytes: number;
  img: DecodedImage;
  ours?: Timing;
  oursTs?: Timing;
  decode?: Timing;
  transform?: Timing;
  pil?: Timing;
  sameBits?: boolean;
}

const perSec = (s: number): string => (1 / s).toFixed(1);
const ms = (s: number): string => (s * 1000).toFixed(2);

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  sharp.concurrency(1);
  const cfg: PreprocessConfig = resolveConfig({
    model_cfg: { embed_dim: 8 },
    preprocess_cfg: { size: 224 },
  }).preprocess_cfg;
  const files = await inputFiles(opt);
  const python = opt.pil ? findReferencePython() : undefined;
  const pil = python ? await PilReference.start(python) : undefined;
  const load = os.loadavg()[0];
  process.stdout.write(
    `preprocess vs PIL: ${opt.images} images × best of ${opt.rounds} alternating rounds, one thread each; node ${process.version}, sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips})` +
      (pil
        ? `, Pillow ${pil.versions.pillow} + torchvision ${pil.versions.torchvision} (${python})`
        : ', PIL reference not run (install python3-pil python3-torchvision, or set CLIPSERVE_PIL_PYTHON)') +
      `; ${os.cpus().length} CPUs, load average ${load.toFixed(1)} at start\n`,
  );
  try {
    const rows: Row[] = [];
    for (const file of files) {
      const bytes = fs.readFileSync(file);
      rows.push({ file, bytes: bytes.length, img: await decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg }) });
    }
    for (let round = 0; round < opt.rounds; round++) {
      for (const row of rows) {
        const bytes = fs.readFileSync(row.file);
        const runOurs = async (): Promise<void> => {
          setSimdKernels(true);
          row.ours = best(row.ours, await timeN(opt.images, () => preprocessImage(bytes, cfg)));
          row.decode = best(
            row.decode,
            await timeN(opt.images, () => decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg })),
          );
          row.transform = best(row.transform, await timeN(opt.images, () => transformImage(row.img, cfg)));
          setSimdKernels(false);
          try {
            row.oursTs = best(row.oursTs, await timeN(opt.images, () => preprocessImage(bytes, cfg)));
          } finally {
            setSimdKernels(true);
          }
        };
        const runPil = async (): Promise<void> => {
          if (!pil) return;
          const r: ReferenceTiming = await pil.time(row.file, opt.images);
          row.pil = best(row.pil, r);
          const ours = await preprocessImage(bytes, cfg);
          row.sameBits =
            createHash('sha256')
              .update(new Uint8Array(ours.buffer, ours.byteOffset, ours.byteLength))
              .digest('hex') === r.sha256;
        };
        if (round % 2 === 0) {
          await runOurs();
          await runPil();
        } else {
          await runPil();
          await runOurs();
        }
      }
    }
    report(rows);
  } finally {
    pil?.close();
  }
}

function report(rows: Row[]): void {
  const out: string[] = [];
  out.push('');
  out.push(
    '| file | PIL + torchvision | clipserve | ratio per core (CPU) | ratio (wall) | clipserve, TS passes | same bits |',
  );
  out.push('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const name = `${path.basename(r.file)} (${r.img.mode} ${r.img.width}×${r.img.height}, ${(r.bytes / 1024).toFixed(0)} KiB)`;
    const o = r.ours!;
    const p = r.pil;
    out.push(
      `| ${name} | ${p ? `${perSec(p.cpu)}/s (${ms(p.cpu)} ms)` : '–'} | ${perSec(o.cpu)}/s (${ms(o.cpu)} ms) | ` +
        `${p ? (p.cpu / o.cpu).toFixed(2) : '–'} | ${p ? (p.wall / o.wall).toFixed(2) : '–'} | ${perSec(r.oursTs!.cpu)}/s | ${p ? (r.sameBits ? 'yes' : '**NO**') : '–'} |`,
    );
  }
  out.push('');
  out.push('clipserve per image, CPU (wall): decode | transform (resize + crop + normalise)');
  for (const r of rows) {
    out.push(
      `  ${path.basename(r.file).padEnd(22)} ${ms(r.decode!.cpu)} ms (${ms(r.decode!.wall)}) | ${ms(r.transform!.cpu)} ms (${ms(r.transform!.wall)})`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
