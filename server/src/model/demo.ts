/**
 * The demo model `clipserve serve` runs when no model is configured: the seeded `tiny`
 * architecture with the demo vocabulary, built once into a cache directory. writeBundle renames a
 * finished temp directory into place, so concurrent first starts never see a partial bundle.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MANIFEST_FILE } from './bundle';
import { writeRandomBundle } from './random-bundle';

export const DEMO_ARCH = 'tiny';
export const DEMO_SEED = 0;
/** Bump when the demo bundle's contents change, so old caches are not reused. */
export const DEMO_BUNDLE_NAME = `demo-${DEMO_ARCH}-seed${DEMO_SEED}-v1`;

export async function ensureDemoBundle(cacheDir: string): Promise<string> {
  const dir = path.join(path.resolve(cacheDir), DEMO_BUNDLE_NAME);
  if (fs.existsSync(path.join(dir, MANIFEST_FILE))) return dir;
  fs.mkdirSync(cacheDir, { recursive: true });
  try {
    await writeRandomBundle({ arch: DEMO_ARCH, seed: DEMO_SEED, outDir: dir, name: 'clipserve-demo', demo: true });
  } catch (err) {
    // Another process finished first: its complete bundle is as good as ours.
    if (fs.existsSync(path.join(dir, MANIFEST_FILE))) return dir;
    throw err;
  }
  return dir;
}
