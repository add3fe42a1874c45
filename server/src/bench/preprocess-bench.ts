/**
 * Preprocessing throughput on one core: a 2000×1500 JPEG photo and a 512×512 RGBA PNG icon,
 * both generated with sharp, through preprocessImage (decode + OpenCLIP transform) at 224 px.
 * Also splits the time into decode and transform.
 *
 *   node dist/bench/preprocess-bench.js [--iterations N] [--pool N]
 */
import sharp from 'sharp';
import { performance } from 'node:perf_hooks';
import { resolveConfig } from '../model/config';
import { decodeImage } from '../preprocess/decode';
import { DEFAULT_IMAGE_LIMITS, PreprocessPool, preprocessImage } from '../preprocess';
import { transformImage } from '../preprocess/transform';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** A photo-like image: smooth gradients, edges and sensor-like noise (compresses like a photo). */
async function makePhoto(w: number, h: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  let seed = 12345;
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 3) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const n = (seed >>> 24) % 17;
      const edge = ((x >> 6) + (y >> 6)) & 1 ? 40 : 0;
      raw[i] = Math.min(255, ((x * 255) / w + n + edge) | 0);
      raw[i + 1] = Math.min(255, ((y * 255) / h + n) | 0);
      raw[i + 2] = Math.min(255, (128 + 100 * Math.sin(x / 90 + y / 130) + n) | 0);
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

/** An icon-like RGBA PNG: flat shapes with anti-aliased alpha edges. */
async function makeIcon(size: number): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">
    <circle cx="${size / 2}" cy="${size / 2}" r="${size * 0.42}" fill="#3b82f6"/>
    <rect x="${size * 0.3}" y="${size * 0.3}" width="${size * 0.4}" height="${size * 0.4}" rx="${size * 0.05}" fill="#fde047"/>
  </svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

async function time(label: string, iterations: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await fn(); // warm-up (JIT, sharp init)
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) await fn();
  const ms = (performance.now() - t0) / iterations;
  const c = process.cpuUsage(c0);
  // CPU time (all threads of the process) is what one core spends per image; wall time also
  // shows contention from anything else running on the machine.
  const cpuMs = (c.user + c.system) / 1000 / iterations;
  console.log(`${label.padEnd(44)} wall ${ms.toFixed(2).padStart(7)} ms (${(1000 / ms).toFixed(1).padStart(6)} images/s)  cpu ${cpuMs.toFixed(2).padStart(7)} ms (${(1000 / cpuMs).toFixed(1).padStart(6)} images/s)`);
  return ms;
}

async function main(): Promise<void> {
  const iterations = arg('iterations', 20);
  const poolSize = arg('pool', 0);
  // One core: libvips must not spread a single decode over several threads.
  sharp.concurrency(1);
  const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;
  const inputs: Array<[string, Buffer]> = [
    ['2000x1500 JPEG photo', await makePhoto(2000, 1500)],
    ['512x512 RGBA PNG icon', await makeIcon(512)],
  ];
  console.log(`preprocess bench: size ${cfg.size}, ${iterations} iterations, node ${process.version}, sharp.concurrency(1)`);
  for (const [name, bytes] of inputs) {
    await time(`${name} (${(bytes.length / 1024).toFixed(0)} KiB): total`, iterations, () => preprocessImage(bytes, cfg));
    const img = await decodeImage(bytes, DEFAULT_IMAGE_LIMITS);
    await time(`  decode only (mode ${img.mode})`, iterations, () => decodeImage(bytes, DEFAULT_IMAGE_LIMITS));
    await time('  transform only (resize+crop+normalise)', iterations, async () => transformImage(img, cfg));
  }
  if (poolSize > 0) {
    const pool = new PreprocessPool({ size: poolSize, cfg });
    for (const [name, bytes] of inputs) {
      // Warm-up: every worker JIT-compiles its own copy of the code.
      for (let i = 0; i < 3; i++) await Promise.all(Array.from({ length: poolSize }, () => pool.run(bytes)));
      const n = iterations * poolSize;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: n }, () => pool.run(bytes)));
      const s = (performance.now() - t0) / 1000;
      console.log(`${`pool(${poolSize}) ${name}`.padEnd(44)} ${(n / s).toFixed(1).padStart(8)} images/s`);
    }
    await pool.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
