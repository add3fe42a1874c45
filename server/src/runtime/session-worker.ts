/**
 * Worker-thread host for one onnxruntime InferenceSession. session.run is CPU-bound native work
 * that would otherwise stall the server's event loop; here it runs off the main thread, one run
 * at a time, and results go back by buffer transfer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { lowerThisThreadPriority } from '../util/priority';
import { RUNTIME_SESSION_EXTRA } from './session-options';
import {
  ownedBuffer,
  type ExecutionProvider,
  type SessionWorkerData,
  type WireTensor,
  type WorkerRequest,
  type WorkerResponse,
} from './session-protocol';

const data = workerData as SessionWorkerData;
const port = parentPort!;
// Before the session exists, so that its intra-op threads inherit the priority.
if (data.lowPriority) lowerThisThreadPriority();

function sessionOptions(provider: ExecutionProvider): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: provider === 'cuda' ? [{ name: 'cuda' }, 'cpu'] : ['cpu'],
    graphOptimizationLevel: data.graphOptimizationLevel,
    ...(data.intraOpThreads ? { intraOpNumThreads: data.intraOpThreads } : {}),
    ...(data.interOpThreads ? { interOpNumThreads: data.interOpThreads } : {}),
    executionMode: 'sequential',
    // Config entries shared with the bench's raw limit (no spinning; see ./session-options).
    ...RUNTIME_SESSION_EXTRA,
  };
}

function toWire(t: ort.Tensor): { wire: WireTensor; buffer: ArrayBuffer } {
  // Transfer needs a buffer that holds exactly this tensor; copy only if ORT handed us a view.
  const buffer = ownedBuffer(t.data as Float32Array | BigInt64Array);
  return { wire: { type: t.type as WireTensor['type'], data: buffer, dims: [...t.dims] }, buffer };
}

function fromWire(w: WireTensor): ort.Tensor {
  return w.type === 'int64'
    ? new ort.Tensor('int64', new BigInt64Array(w.data), w.dims)
    : new ort.Tensor('float32', new Float32Array(w.data), w.dims);
}

async function main(): Promise<void> {
  let session: ort.InferenceSession | undefined;
  let provider: ExecutionProvider = 'cpu';
  const errors: string[] = [];
  for (const p of data.providers) {
    try {
      session = await ort.InferenceSession.create(data.modelPath, sessionOptions(p));
      provider = p;
      break;
    } catch (err) {
      errors.push(`${p}: ${(err as Error).message}`);
    }
  }
  if (!session) {
    port.postMessage({ kind: 'init-error', message: errors.join('; ') } satisfies WorkerResponse);
    return;
  }
  const s = session;
  port.postMessage({
    kind: 'ready',
    provider,
    inputNames: [...s.inputNames],
    outputNames: [...s.outputNames],
  } satisfies WorkerResponse);

  // One run at a time: concurrent runs would only fight over the same intra-op threads.
  let chain: Promise<void> = Promise.resolve();
  port.on('message', (req: WorkerRequest) => {
    chain = chain.then(async () => {
      if (req.kind === 'close') {
        await s.release();
        port.postMessage({ id: req.id, kind: 'closed' } satisfies WorkerResponse);
        port.close();
        return;
      }
      try {
        const feeds: Record<string, ort.Tensor> = {};
        for (const [name, w] of Object.entries(req.feeds)) feeds[name] = fromWire(w);
        const result = await s.run(feeds, req.outputs);
        const outputs: Record<string, WireTensor> = {};
        const transfer: ArrayBuffer[] = [];
        for (const name of req.outputs) {
          const { wire, buffer } = toWire(result[name]);
          outputs[name] = wire;
          transfer.push(buffer);
        }
        port.postMessage({ id: req.id, kind: 'result', outputs } satisfies WorkerResponse, transfer);
      } catch (err) {
        port.postMessage({ id: req.id, kind: 'error', message: (err as Error).message } satisfies WorkerResponse);
      }
    });
  });
}

main().catch((err: unknown) => {
  port.postMessage({
    kind: 'init-error',
    message: err instanceof Error ? err.message : String(err),
  } satisfies WorkerResponse);
});
