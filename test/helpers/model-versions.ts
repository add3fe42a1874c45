/**
 * Fixtures for the suites that serve several model versions: tiny random bundles registered in a
 * data directory the way a fine-tune job's output is, and a server started with the small
 * footprint those suites share.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import pino from 'pino';
import { writeRandomBundle } from '../../server/src/model/random-bundle';
import { ModelRegistry } from '../../server/src/versions/registry';
import { startServer, type RunningServer, type StartServerConfig } from '../../server/src/serve/server';
import { SqliteStore } from '../../server/src/store/sqlite-store';

/**
 * Writes `<tmp>/v<seed>` for each seed (version "seed-<seed>"): the first is the configured model,
 * the others are registered in `dataDir` as fine-tuned from it. `corrupt` seeds get a flipped byte
 * in their visual weights (their load fails the checksum).
 */
export async function writeVersions(
  tmp: string,
  dataDir: string,
  seeds: number[],
  corrupt: number[] = [],
): Promise<string> {
  const [base, ...others] = seeds;
  await writeRandomBundle({ arch: 'tiny', seed: base, outDir: path.join(tmp, `v${base}`) });
  const store = await SqliteStore.open(dataDir);
  try {
    const registry = new ModelRegistry(store, dataDir);
    for (const seed of others) {
      const dir = path.join(tmp, `v${seed}`);
      await writeRandomBundle({ arch: 'tiny', seed, outDir: dir });
      if (corrupt.includes(seed)) {
        const weights = path.join(dir, 'visual.onnx.data');
        const bytes = fs.readFileSync(weights);
        bytes[bytes.length >> 1] ^= 0xff;
        fs.writeFileSync(weights, bytes);
      }
      await registry.registerFineTuned({
        version: `seed-${seed}`,
        name: 'random-tiny',
        bundleDir: dir,
        parentVersion: `seed-${base}`,
        jobId: '',
        metrics: {},
      });
    }
  } finally {
    await store.close();
  }
  return path.join(tmp, `v${base}`);
}

/** A server on free loopback ports, one CPU thread per session and one preprocessing worker, silent. */
export function startTinyServer(config: StartServerConfig): Promise<RunningServer> {
  return startServer({
    host: '127.0.0.1',
    port: 0,
    metricsPort: 0,
    httpPort: 0,
    provider: 'cpu',
    intraOpThreads: 1,
    preprocessWorkers: 1,
    logger: pino({ level: 'silent' }),
    ...config,
  });
}
