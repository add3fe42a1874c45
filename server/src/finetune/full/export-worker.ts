/**
 * Worker thread: writes the base model's weights as an open_clip safetensors file (base-model.ts),
 * off the event loop (a ViT-L is 1.7 GB): from a bundle's ONNX towers, or from a torch.save
 * checkpoint's state dict (a trainer's epoch_N.pt without its optimizer state).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readCheckpointFile } from '../../checkpoint';
import { writeSafetensors } from '../../checkpoint/safetensors-write';
import { loadBundle } from '../../model/bundle';
import { readBundleStateDict } from '../../model/bundle-weights';
import type { ExportSource } from './base-model';

const { source, outFile } = workerData as { source: ExportSource; outFile: string };

async function main(): Promise<void> {
  if (source.kind === 'torch') {
    const { stateDict } = await readCheckpointFile(source.file);
    await writeSafetensors(outFile, stateDict, { source: source.file });
    return;
  }
  const bundle = await loadBundle(source.bundleDir, { verify: true });
  await writeSafetensors(outFile, readBundleStateDict(bundle), {
    exported_from: bundle.manifest.name,
    version: bundle.manifest.version,
  });
}

main().then(
  () => parentPort!.postMessage({ ok: true }),
  (err: Error) => parentPort!.postMessage({ ok: false, message: err.message }),
);
