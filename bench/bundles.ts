/**
 * Benchmark bundles: seeded random-weight models of the exact OpenCLIP architectures, built once
 * into a cache directory (<cacheDir>/<arch>) and reused by later runs. Speed does not depend on
 * the weights' values, so random weights measure what a fine-tuned checkpoint of the same shape
 * would.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadBundle, type Bundle } from '../server/src/model/bundle';
import type { ArchName } from '../server/src/model/config';
import { isArchName, writeRandomBundle } from '../server/src/model/random-bundle';

export const BENCH_ARCHS: readonly ArchName[] = ['tiny', 'ViT-B-32', 'ViT-L-14'];
const BENCH_SEED = 1;

export class BenchConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchConfigError';
  }
}

export function parseArch(name: string): ArchName {
  if (!isArchName(name))
    throw new BenchConfigError(`unknown model ${JSON.stringify(name)} (expected one of ${BENCH_ARCHS.join(', ')})`);
  return name;
}

/** Bytes of the towers' ONNX files and external weight data: what a serving process must hold. */
export function weightBytes(bundle: Bundle): number {
  const f = bundle.manifest.files;
  return [f.visual, f.visual_data, f.textual, f.textual_data].reduce((n, ref) => n + (ref?.bytes ?? 0), 0);
}

/**
 * The bundle directory for `arch`, written on first use. A cached bundle is checked without
 * hashing (sizes and signatures only) so a ViT-L/14 cache hit costs milliseconds, not a 1.7 GB
 * sha256; an unreadable one is rebuilt.
 */
export async function ensureBenchBundle(
  arch: ArchName,
  cacheDir: string,
  log: (msg: string) => void,
): Promise<{ dir: string; bundle: Bundle; built: boolean; buildSeconds: number }> {
  const dir = path.resolve(cacheDir, arch);
  if (fs.existsSync(dir)) {
    try {
      return { dir, bundle: await loadBundle(dir, { verify: false }), built: false, buildSeconds: 0 };
    } catch (err) {
      log(`cached bundle ${dir} is unusable (${(err as Error).message}); rebuilding`);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  log(`building the ${arch} bench bundle (random weights, seed ${BENCH_SEED}) in ${dir}`);
  const t0 = performance.now();
  await writeRandomBundle({ arch, seed: BENCH_SEED, outDir: dir, name: `bench-${arch}` });
  const buildSeconds = (performance.now() - t0) / 1000;
  return { dir, bundle: await loadBundle(dir, { verify: false }), built: true, buildSeconds };
}
