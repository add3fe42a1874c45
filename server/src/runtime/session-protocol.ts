/** Messages between an encoder's main-thread proxy and its onnxruntime worker thread. */

export type ExecutionProvider = 'cpu' | 'cuda';
export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface SessionWorkerData {
  modelPath: string;
  /** Providers to try in order; the first that creates a session wins. */
  providers: ExecutionProvider[];
  intraOpThreads?: number;
  interOpThreads?: number;
  graphOptimizationLevel: GraphOptimizationLevel;
  /** Background work (fine-tuning): the worker and its intra-op threads run at the lowest priority. */
  lowPriority?: boolean;
}

/** The view's whole ArrayBuffer when the view spans it (then it can be transferred as is), else a copy. */
export function ownedBuffer(a: ArrayBufferView): ArrayBuffer {
  if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer) return a.buffer;
  return a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength) as ArrayBuffer;
}

export interface WireTensor {
  type: 'float32' | 'int64';
  data: ArrayBuffer;
  dims: number[];
}

export type WorkerRequest =
  { id: number; kind: 'run'; feeds: Record<string, WireTensor>; outputs: string[] } | { id: number; kind: 'close' };

export type WorkerResponse =
  | { kind: 'ready'; provider: ExecutionProvider; inputNames: string[]; outputNames: string[] }
  | { kind: 'init-error'; message: string }
  | { id: number; kind: 'result'; outputs: Record<string, WireTensor> }
  | { id: number; kind: 'error'; message: string }
  | { id: number; kind: 'closed' };
