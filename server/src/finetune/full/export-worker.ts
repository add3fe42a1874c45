/**
 * Worker thread: reads a bundle's weights back from its ONNX towers and writes them as an
 * open_clip safetensors file (base-model.ts), off the event loop: a ViT-L bundle is 1.7 GB.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { writeSafetensors } from '../../checkpoint/safetensors-write';
import { loadBundle } from '../../model/bundle';
import { readBundleStateDict } from '../../models/bundle-weights';

const { bundleDir, outFile } = workerData as { bundleDir: string; outFile: string };

async function main(): Promise<void> {
  const bundle = await loadBundle(bundleDir, { verify: true });
  await writeSafetensors(outFile, readBundleStateDict(bundle), { exported_from: bundle.manifest.name, version: bundle.manifest.version });
}

main().then(
  () => parentPort!.postMessage({ ok: true }),
  (err: Error) => parentPort!.postMessage({ ok: false, message: err.message }),
);
