/**
 * Worker-thread entry of PreprocessPool: runs one job at a time — an image decoded and
 * preprocessed (optionally augmented for training), or a text tokenized — and transfers the
 * result's buffer back (no copy). Loaded from dist/ via compiledModule().
 */
import { parentPort, workerData } from 'node:worker_threads';
import { augmentTensor } from '../finetune/adapter/augment';
import { ClipTokenizer } from '../tokenizer';
import { lowerThisThreadPriority } from '../util/priority';
import { seededRandom } from '../util/random';
import { decodeImage } from './decode';
import { ImageError } from './errors';
import { transformImage } from './transform';
import type { ImageJobRequest, JobReply, JobRequest, TextJobRequest, WorkerInit } from './worker-protocol';

if (!parentPort) throw new Error('preprocess/worker must run as a worker thread');
const port = parentPort;
const { cfg, vocabPath, priority } = workerData as WorkerInit;

lowerThisThreadPriority(priority ?? 'normal');

let tokenizer: ClipTokenizer | undefined;

async function runImage(job: ImageJobRequest): Promise<JobReply> {
  const img = await decodeImage(job.bytes, job.limits, { cfg, timeoutSeconds: job.timeoutSeconds });
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
        const reply: JobReply = { id: job.id, ok: false, code: e instanceof ImageError ? e.code : undefined, name: e.name, message: e.message };
        port.postMessage(reply);
      },
    );
});
