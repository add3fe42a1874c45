/**
 * Worker-thread entry of PreprocessPool: decodes and preprocesses one image at a time and
 * transfers the tensor's buffer back (no copy). Loaded from dist/ via compiledModule().
 */
import { parentPort, workerData } from 'node:worker_threads';
import { decodeImage } from './decode';
import { ImageError } from './errors';
import { transformImage } from './transform';
import type { JobReply, JobRequest, WorkerInit } from './worker-protocol';

if (!parentPort) throw new Error('preprocess/worker must run as a worker thread');
const port = parentPort;
const { cfg, limits } = workerData as WorkerInit;

port.on('message', (job: JobRequest) => {
  decodeImage(job.bytes, limits)
    .then((img) => transformImage(img, cfg))
    .then(
      (tensor) => {
        const reply: JobReply = { id: job.id, ok: true, tensor };
        port.postMessage(reply, [tensor.buffer as ArrayBuffer]);
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        const reply: JobReply = { id: job.id, ok: false, code: e instanceof ImageError ? e.code : undefined, name: e.name, message: e.message };
        port.postMessage(reply);
      },
    );
});
