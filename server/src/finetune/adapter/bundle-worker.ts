/**
 * Worker-thread entry that writes an adapter job's new model version: reads the base bundle's
 * weights, folds the trained adapters into the projections and writes the bundle (ONNX graphs with
 * every weight: gigabytes for ViT-L, all synchronous work). Off the event loop and at the lowest
 * CPU priority, like the rest of the job.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadBundle, writeBundle } from '../../model/bundle';
import { readBundleStateDict } from '../../model/bundle-weights';
import type { CalibrationData } from '../../model/calibration-set';
import { lowerThisThreadPriority } from '../../util/priority';
import { foldAdapters } from './fold';

export interface FoldBundleJob {
  baseDir: string;
  outDir: string;
  version: string;
  wImage: Float64Array;
  wText: Float64Array;
  source: Record<string, unknown>;
  /** An int8 base: the job's training pairs, which the new version calibrates on (the data it
   *  will serve, not generated inputs). */
  calibration?: CalibrationData;
}

export type FoldBundleReply = { ok: true } | { ok: false; message: string };

const port = parentPort;
if (!port) throw new Error('bundle-worker must run as a worker thread');
lowerThisThreadPriority();

async function main(job: FoldBundleJob): Promise<void> {
  const base = await loadBundle(job.baseDir);
  const stateDict = foldAdapters(readBundleStateDict(base), job.wImage, job.wText);
  await writeBundle({
    outDir: job.outDir,
    name: base.manifest.name,
    version: job.version,
    config: { model_cfg: base.manifest.model_cfg, preprocess_cfg: base.manifest.preprocess_cfg },
    stateDict,
    vocabFile: base.paths.vocab,
    precision: base.manifest.precision,
    ...(job.calibration && { int8Settings: { data: job.calibration } }),
    // Lineage: a version fine-tuned from the random-weight demo bundle is still a demo model.
    demo: base.manifest.demo,
    source: job.source,
  });
}

main(workerData as FoldBundleJob).then(
  () => port.postMessage({ ok: true } satisfies FoldBundleReply),
  (err: unknown) =>
    port.postMessage({
      ok: false,
      message: err instanceof Error ? err.message : String(err),
    } satisfies FoldBundleReply),
);
