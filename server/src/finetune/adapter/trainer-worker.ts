/**
 * Worker thread entry of the adapter trainer: receives the features and settings, posts progress,
 * and ends with the trained adapters. The job runner terminates the worker to cancel it, which
 * frees its memory at once; the last epoch checkpoint on disk stays valid (written atomically).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { lowerThisThreadPriority } from '../../util/priority';
import type { RetrievalMetrics } from '../../eval/metrics';
import { adaptedMetrics, train, type TrainInput } from './train-loop';

export type TrainerMessage =
  | { type: 'progress'; progress: import('./train-loop').TrainProgress }
  | { type: 'before'; metrics: RetrievalMetrics }
  | { type: 'done'; wImage: Float64Array; wText: Float64Array; metrics: RetrievalMetrics }
  | { type: 'error'; message: string };

const port = parentPort;
if (!port) throw new Error('trainer-worker must run as a worker thread');
// Background work: serving keeps the cores first.
lowerThisThreadPriority();
try {
  const input = workerData as TrainInput;
  // The validation metrics are n² · d work each: here, not on the server's event loop.
  const zero = { wImage: new Float64Array(input.d * input.d), wText: new Float64Array(input.d * input.d) };
  port.postMessage({
    type: 'before',
    metrics: adaptedMetrics(zero, input.validation, input.d, input.scale),
  } satisfies TrainerMessage);
  const params = train(input, (progress) => port.postMessage({ type: 'progress', progress } satisfies TrainerMessage));
  const metrics = adaptedMetrics(params, input.validation, input.d, input.scale);
  port.postMessage({ type: 'done', wImage: params.wImage, wText: params.wText, metrics } satisfies TrainerMessage);
} catch (err) {
  port.postMessage({
    type: 'error',
    message: err instanceof Error ? err.message : String(err),
  } satisfies TrainerMessage);
}
