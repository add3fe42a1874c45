/**
 * Worker thread entry of the adapter trainer: receives the features and settings, posts progress,
 * and ends with the trained adapters. The job runner terminates the worker to cancel it, which
 * frees its memory at once; the last epoch checkpoint on disk stays valid (written atomically).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { train, type TrainInput } from './train-loop';

export type TrainerMessage =
  | { type: 'progress'; progress: import('./train-loop').TrainProgress }
  | { type: 'done'; wImage: Float64Array; wText: Float64Array }
  | { type: 'error'; message: string };

const port = parentPort;
if (!port) throw new Error('trainer-worker must run as a worker thread');
try {
  const input = workerData as TrainInput;
  const params = train(input, (progress) => port.postMessage({ type: 'progress', progress } satisfies TrainerMessage));
  port.postMessage({ type: 'done', wImage: params.wImage, wText: params.wText } satisfies TrainerMessage);
} catch (err) {
  port.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) } satisfies TrainerMessage);
}
