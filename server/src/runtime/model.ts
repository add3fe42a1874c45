/**
 * A loaded model: the bundle (verified), its tokenizer, an image preprocessing pool and one
 * onnxruntime session per tower, each in its own worker thread so inference never blocks the
 * event loop. This is the interface the gRPC server and the CLI use.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadBundle, type Bundle, type BundlePrecision } from '../model/bundle';
import { IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUT, TEXT_OUTPUT } from '../onnx/clip-graph';
import { PreprocessPool, type ImageLimits } from '../preprocess';
import type { TokenizedText } from '../preprocess/pool';
import type { AugmentSpec } from '../preprocess/worker-protocol';
import { ClipTokenizer } from '../tokenizer';
import { ownedBuffer, type ExecutionProvider, type GraphOptimizationLevel } from './session-protocol';
import { RuntimeError, WorkerSession } from './worker-session';

export { RuntimeError };

export interface ModelInfo {
  name: string;
  version: string;
  embedDim: number;
  imageSize: number;
  contextLength: number;
  /** exp'd, as model(image, text) uses */
  logitScale: number;
  provider: 'cpu' | 'cuda';
  demo: boolean;
  precision: BundlePrecision;
}

export interface RuntimeOptions {
  provider?: 'auto' | 'cpu' | 'cuda';
  intraOpThreads?: number;
  interOpThreads?: number;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  preprocessWorkers?: number;
  /** Most preprocessing workers one caller (job owner) occupies at once (default: all). */
  preprocessWorkersPerCaller?: number;
  /** The image limits the preprocessing pool enforces on every image (default DEFAULT_IMAGE_LIMITS):
   *  a load-time option, sent to the pool's workers once. */
  imageLimits?: ImageLimits;
  /** Longest one image may take to decode, in seconds (libvips' timeout); absent or 0: no limit. */
  decodeTimeoutSeconds?: number;
  /** Background work (fine-tuning): every worker thread, and the threads they start, runs at the
   *  lowest CPU priority so that serving keeps the cores first. (Serving's own workers stay at
   *  normal priority: measured side by side under hostile load, 'below-normal' workers did not
   *  improve the probes and lost throughput to other processes on a shared host.) */
  lowPriority?: boolean;
}

/** Per-image options of preprocessImage: cancellation and the caller, never limits (those are the model's, fixed at load). */
export interface PreprocessOptions {
  /** Aborting drops the image if its decode has not started (see PreprocessPool). */
  signal?: AbortSignal;
  /** Training augmentation of the preprocessed pixels (fine-tuning). */
  augment?: AugmentSpec;
  /** The caller's key: the pool's jobs take turns per owner (and one owner's workers may be capped). */
  owner?: string;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  readonly bundle: Bundle;
  readonly tokenizer: ClipTokenizer;
  /** The limits preprocessImage holds every image to (RuntimeOptions.imageLimits). */
  readonly imageLimits: ImageLimits;
  /** CHW float32 pixels; throws ImageError (server/src/preprocess) for bad input; runs in a worker pool */
  preprocessImage(bytes: Uint8Array, opts?: PreprocessOptions): Promise<Float32Array>;
  /** The tokenizer's row for `text`, computed in the same worker pool (off the event loop). */
  tokenizeText(text: string, contextLength?: number, signal?: AbortSignal, owner?: string): Promise<TokenizedText>;
  /** ids: n × contextLength int32 (tokenizer output); runs cut to the longest EOT + 1; raw features n×E */
  encodeText(ids: Int32Array, n: number): Promise<Float32Array>;
  /** pixels: n × 3 × S × S; raw features n×E. When `pixels` spans its whole ArrayBuffer, that buffer
   *  is transferred to the inference worker (no copy) and is detached afterwards: pass a copy to keep it. */
  encodeImage(pixels: Float32Array, n: number): Promise<Float32Array>;
  warmup(): Promise<void>;
  close(): Promise<void>;
}

const CUDA_PROVIDER_LIBRARY =
  process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';

/** Where onnxruntime-node keeps its native binding and, once installed, the CUDA provider library. */
function ortBinaryDir(): string {
  return path.join(path.dirname(require.resolve('onnxruntime-node')), '..', 'bin');
}

/**
 * Whether CUDA can be tried: onnxruntime-node lists the EP, and its provider library was installed
 * next to the native binding (it is not on the npm registry: onnxruntime-node's install script
 * fetches it, which this repository skips by default; without it a session attempt only fails with
 * "Failed to load shared library").
 */
export function cudaAvailable(): boolean {
  try {
    if (!ort.listSupportedBackends().some((b) => b.name === 'cuda')) return false;
    const binDir = ortBinaryDir();
    for (const napi of fs.readdirSync(binDir)) {
      if (fs.existsSync(path.join(binDir, napi, process.platform, process.arch, CUDA_PROVIDER_LIBRARY))) return true;
    }
    return false;
  } catch {
    return false;
  }
}

/** Why `--provider cuda` cannot work here and how to fix it; undefined when it can be tried. */
export function cudaUnavailableReason(): string | undefined {
  if (cudaAvailable()) return undefined;
  let listed = false;
  try {
    listed = ort.listSupportedBackends().some((b) => b.name === 'cuda');
  } catch {
    /* reported as not listed */
  }
  if (!listed)
    return `this onnxruntime-node build has no CUDA execution provider on ${process.platform}/${process.arch} (it ships one for linux/x64 only): use --provider cpu`;
  return (
    `onnxruntime's CUDA provider library (${CUDA_PROVIDER_LIBRARY}) is not installed next to onnxruntime-node's binding in ${ortBinaryDir()}. ` +
    'It is not on the npm registry, and this repository skips its download at npm install; fetch it (from nuget.org) with ' +
    '"ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js", with the CUDA 12 and cuDNN 9 ' +
    'libraries on the loader path, or run the gpu image of deploy/docker/Dockerfile; or use --provider cpu'
  );
}

/** Providers to try, in order: 'auto' tries CUDA first when listed and falls back to the CPU. */
export function providerCandidates(p: RuntimeOptions['provider'] = 'auto'): ExecutionProvider[] {
  switch (p) {
    case 'cpu':
      return ['cpu'];
    case 'cuda': {
      const reason = cudaUnavailableReason();
      if (reason) throw new RuntimeError(`--provider cuda: ${reason}`);
      return ['cuda'];
    }
    case 'auto':
      return cudaAvailable() ? ['cuda', 'cpu'] : ['cpu'];
    default:
      throw new RuntimeError(`unknown execution provider ${JSON.stringify(p)} (expected auto, cpu or cuda)`);
  }
}

function checkThreads(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0))
    throw new RuntimeError(`${name} must be a non-negative integer, got ${v}`);
}

/**
 * The ids actually fed to the text tower: every row cut to L = max over rows of (first argmax
 * + 1). With causal attention nothing after a row's pooled (first maximum, i.e. first EOT) token
 * influences it, so the features equal those of the full context at a fraction of the cost.
 */
export function cutTextBatch(
  ids: Int32Array,
  n: number,
  contextLength: number,
  vocabSize: number,
): { ids: BigInt64Array; length: number } {
  if (!Number.isInteger(n) || n <= 0) throw new RuntimeError(`batch size must be a positive integer, got ${n}`);
  if (ids.length !== n * contextLength)
    throw new RuntimeError(`expected ${n} × ${contextLength} token ids, got ${ids.length}`);
  let length = 1;
  for (let r = 0; r < n; r++) {
    const row = r * contextLength;
    let best = 0;
    for (let i = 0; i < contextLength; i++) {
      const v = ids[row + i];
      if (v < 0 || v >= vocabSize)
        throw new RuntimeError(`token id ${v} at row ${r}, position ${i} is outside the vocabulary [0, ${vocabSize})`);
      if (v > ids[row + best]) best = i;
    }
    length = Math.max(length, best + 1);
  }
  const out = new BigInt64Array(n * length);
  for (let r = 0; r < n; r++) for (let i = 0; i < length; i++) out[r * length + i] = BigInt(ids[r * contextLength + i]);
  return { ids: out, length };
}

export async function loadModel(bundleDir: string, opts: RuntimeOptions = {}): Promise<LoadedModel> {
  checkThreads('intraOpThreads', opts.intraOpThreads);
  checkThreads('interOpThreads', opts.interOpThreads);
  checkThreads('preprocessWorkers', opts.preprocessWorkers);
  const level: GraphOptimizationLevel = opts.graphOptimizationLevel ?? 'all';
  if (!['disabled', 'basic', 'extended', 'all'].includes(level))
    throw new RuntimeError(`unknown graph optimization level ${JSON.stringify(level)}`);
  const providers = providerCandidates(opts.provider);

  const bundle = await loadBundle(bundleDir);
  const m = bundle.manifest;
  const tokenizer = ClipTokenizer.fromMergesFile(bundle.paths.vocab);
  if (tokenizer.vocabSize !== m.model_cfg.text_cfg.vocab_size) {
    throw new RuntimeError(
      `${bundle.paths.vocab}: the tokenizer has ${tokenizer.vocabSize} tokens but the text tower's vocab_size is ${m.model_cfg.text_cfg.vocab_size}`,
    );
  }

  const base = {
    providers,
    graphOptimizationLevel: level,
    intraOpThreads: opts.intraOpThreads,
    interOpThreads: opts.interOpThreads,
    lowPriority: opts.lowPriority,
  };
  const sessions = await Promise.allSettled([
    WorkerSession.create({ ...base, modelPath: bundle.paths.visual }, `${m.name} image tower`),
    WorkerSession.create({ ...base, modelPath: bundle.paths.textual }, `${m.name} text tower`),
  ]);
  if (sessions.some((s) => s.status === 'rejected')) {
    await Promise.all(sessions.map((s) => (s.status === 'fulfilled' ? s.value.close() : Promise.resolve())));
    throw (sessions.find((s) => s.status === 'rejected') as PromiseRejectedResult).reason;
  }
  const [visual, textual] = sessions.map((s) => (s as PromiseFulfilledResult<WorkerSession>).value);
  // One provider for both towers: if CUDA came up for only one, the info would lie about the other.
  if (visual.provider !== textual.provider) {
    await Promise.all([visual.close(), textual.close()]);
    throw new RuntimeError(
      `the towers came up on different providers (image ${visual.provider}, text ${textual.provider})`,
    );
  }

  const pool = new PreprocessPool({
    size: opts.preprocessWorkers ?? Math.max(1, os.availableParallelism()),
    cfg: m.preprocess_cfg,
    vocabPath: bundle.paths.vocab,
    ...(opts.imageLimits ? { limits: opts.imageLimits } : {}),
    decodeTimeoutSeconds: opts.decodeTimeoutSeconds,
    ...(opts.preprocessWorkersPerCaller
      ? {
          maxWorkersPerOwner: Math.min(
            opts.preprocessWorkersPerCaller,
            opts.preprocessWorkers ?? Math.max(1, os.availableParallelism()),
          ),
        }
      : {}),
    // Background work decodes in child processes: their lowest priority then reaches libvips'
    // threads too, and a heap bound of their own.
    ...(opts.lowPriority ? { priority: 'low' as const, isolation: 'process' as const } : {}),
  });
  return new OnnxClipModel(bundle, tokenizer, visual, textual, pool);
}

class OnnxClipModel implements LoadedModel {
  readonly info: ModelInfo;
  private closed = false;

  constructor(
    readonly bundle: Bundle,
    readonly tokenizer: ClipTokenizer,
    private readonly visual: WorkerSession,
    private readonly textual: WorkerSession,
    private readonly pool: PreprocessPool,
  ) {
    const m = bundle.manifest;
    this.info = {
      name: m.name,
      version: m.version,
      embedDim: m.embed_dim,
      imageSize: m.image_size,
      contextLength: m.context_length,
      logitScale: m.logit_scale_exp,
      provider: visual.provider,
      demo: m.demo,
      precision: m.precision,
    };
  }

  private ensureOpen(): void {
    if (this.closed) throw new RuntimeError('the model is closed');
  }

  get imageLimits(): ImageLimits {
    return this.pool.limits;
  }

  async preprocessImage(bytes: Uint8Array, opts: PreprocessOptions = {}): Promise<Float32Array> {
    this.ensureOpen();
    return this.pool.run(bytes, opts);
  }

  async tokenizeText(
    text: string,
    contextLength = this.info.contextLength,
    signal?: AbortSignal,
    owner?: string,
  ): Promise<TokenizedText> {
    this.ensureOpen();
    return this.pool.runText(text, contextLength, signal, owner);
  }

  async encodeText(ids: Int32Array, n: number): Promise<Float32Array> {
    this.ensureOpen();
    const { ids: cut, length } = cutTextBatch(ids, n, this.info.contextLength, this.tokenizer.vocabSize);
    const out = await this.textual.run(
      { [TEXT_INPUT]: { type: 'int64', data: cut.buffer as ArrayBuffer, dims: [n, length] } },
      [TEXT_OUTPUT],
    );
    return new Float32Array(out[TEXT_OUTPUT].data);
  }

  async encodeImage(pixels: Float32Array, n: number): Promise<Float32Array> {
    this.ensureOpen();
    const S = this.info.imageSize;
    if (!Number.isInteger(n) || n <= 0) throw new RuntimeError(`batch size must be a positive integer, got ${n}`);
    if (pixels.length !== n * 3 * S * S)
      throw new RuntimeError(`expected ${n} × 3 × ${S} × ${S} pixel values, got ${pixels.length}`);
    const out = await this.visual.run(
      { [IMAGE_INPUT]: { type: 'float32', data: ownedBuffer(pixels), dims: [n, 3, S, S] } },
      [IMAGE_OUTPUT],
    );
    return new Float32Array(out[IMAGE_OUTPUT].data);
  }

  /** One run per tower, so the first request does not pay for onnxruntime's lazy allocations. */
  async warmup(): Promise<void> {
    const S = this.info.imageSize;
    const ids = new Int32Array(this.info.contextLength);
    ids[0] = this.tokenizer.sotId;
    ids[1] = this.tokenizer.eotId;
    await Promise.all([this.encodeImage(new Float32Array(3 * S * S), 1), this.encodeText(ids, 1)]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.visual.close(), this.textual.close(), this.pool.close()]);
  }
}
