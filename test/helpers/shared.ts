import * as fs from 'node:fs';
import * as path from 'node:path';

/** ../shared holds the OpenCLIP golden data. CI always has it; elsewhere the golden suites skip,
 *  loudly, so a green run without it is never mistaken for parity. */
export const SHARED_DIR = path.resolve(
  process.env.CLIPSERVE_SHARED_DIR ?? path.join(__dirname, '..', '..', '..', 'shared'),
);
export const GOLDEN_DIR = path.join(SHARED_DIR, 'golden');
export const HAVE_GOLDEN = fs.existsSync(path.join(GOLDEN_DIR, 'README.md'));

export function describeGolden(name: string, fn: () => void): void {
  if (HAVE_GOLDEN) {
    describe(name, fn);
  } else {
    console.warn(`\n!!! SKIPPING "${name}": golden data not found at ${GOLDEN_DIR} (set CLIPSERVE_SHARED_DIR) !!!\n`);
    describe.skip(name, fn);
  }
}

export function goldenPath(...parts: string[]): string {
  return path.join(GOLDEN_DIR, ...parts);
}

export function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function readI64(file: string): BigInt64Array {
  const b = fs.readFileSync(file);
  return new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
