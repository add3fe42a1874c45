/**
 * Worker entry of PreprocessPool (a worker thread, or a child process: see worker-channel): runs one job at a time — an image decoded and
 * preprocessed (optionally augmented for training), or a text tokenized — and transfers the
 * result's buffer back (no copy). Loaded from dist/ via compiledModule().
 */
import { parentPort, workerData } from 'node:worker_threads';
import { augmentTensor } from './augment';
import { ClipTokenizer } from '../tokenizer';
import { lowerThisThreadPriority, lowerWholeProcessPriority } from '../util/priority';
import { seededRandom } from '../util/random';
import { decodeImage, verifyImage } from './decode';
import { ImageError } from './errors';
import { transformImage } from './transform';
import { CHILD_INIT_ENV } from './worker-channel';
import type { ImageJobRequest, JobReply, JobRequest, TextJobRequest, WorkerInit } from './worker-protocol';

interface Port {
  on(event: 'message', fn: (job: JobRequest) => void): void;
  postMessage(reply: JobReply, transfer: ArrayBuffer[]): void;
}

function openPort(): { port: Port; init: WorkerInit } {
  if (parentPort) return { port: parentPort as unknown as Port, init: workerData as WorkerInit };
  const send = process.send?.bind(process);
  const init = process.env[CHILD_INIT_ENV];
  if (!send || !init) throw new Error('preprocess/worker must run as a worker thread or a forked child process');
  // The server is gone (even killed with SIGKILL): nothing is left to work for.
  process.once('disconnect', () => process.exit(0));
  return {
    port: { on: (_event, fn) => void process.on('message', fn), postMessage: (reply) => void send(reply) },
    init: JSON.parse(init) as WorkerInit,
  };
}

const { port, init } = openPort();
const { cfg, limits, timeoutSeconds, vocabPath, priority } = init;

// A thread lowers itself (and what it starts); a child process lowers all its threads, libuv's
// pool included, so that libvips' decoding runs at that priority too.
if (parentPort) lowerThisThreadPriority(priority ?? 'normal');
else lowerWholeProcessPriority(priority ?? 'normal');

let tokenizer: ClipTokenizer | undefined;

async function runImage(job: ImageJobRequest): Promise<JobReply> {
  if (job.verifyOnly) {
    await verifyImage(job.bytes, limits, { timeoutSeconds });
    return { id: job.id, ok: true, tensor: new Float32Array(0) };
  }
  const img = await decodeImage(job.bytes, limits, { cfg, timeoutSeconds });
  let tensor = transformImage(img, cfg);
  if (job.augment) tensor = augmentTensor(tensor, cfg, job.augment.settings, seededRandom(job.augment.seed));
  return { id: job.id, ok: true, tensor };
}

function runText(job: TextJobRequest): JobReply {
  if (!vocabPath) throw new Error('this preprocessing pool has no tokenizer (no vocabulary file was given)');
  tokenizer ??= ClipTokenizer.fromPath(vocabPath);
  const { ids, truncated, eotIndex } = tokenizer.tokenize(job.text, job.contextLength);
  return { id: job.id, ok: true, ids, truncated, eotIndex };
}

port.on('message', (job: JobRequest) => {
  Promise.resolve()
    .then(() => (job.kind === 'text' ? runText(job) : runImage(job)))
    .then(
      (reply) => {
        const buffer = 'tensor' in reply ? reply.tensor.buffer : 'ids' in reply ? reply.ids.buffer : undefined;
        port.postMessage(reply, buffer ? [buffer as ArrayBuffer] : []);
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        const reply: JobReply = {
          id: job.id,
          ok: false,
          code: e instanceof ImageError ? e.code : undefined,
          name: e.name,
          message: e.message,
        };
        port.postMessage(reply, []);
      },
    );
});
