/**
 * The server's hot paths alone, each on one core unless stated: the tokenizer, image
 * preprocessing (decode + OpenCLIP transform, in-thread and through the worker pool the server
 * uses) and response encoding (Embedding messages + protobuf serialisation of EmbedText replies).
 */
import sharp from 'sharp';
import type { PreprocessConfig } from '../server/src/model/config';
import { embeddingMessage } from '../server/src/grpc/vectors';
import type { EmbeddingFormatName, EmbedTextResponse } from '../server/src/grpc/messages';
import { loadProtos } from '../server/src/grpc/proto';
import { PreprocessPool, preprocessImage } from '../server/src/preprocess';
import { decodeImage } from '../server/src/preprocess/decode';
import { DEFAULT_IMAGE_LIMITS } from '../server/src/preprocess';
import { transformImage } from '../server/src/preprocess/transform';
import type { ClipTokenizer } from '../server/src/tokenizer';

export interface TokenizerResult {
  captions: number;
  avgChars: number;
  /** first pass: every BPE piece encoded for the first time */
  coldPerSec: number;
  /** best of two further passes (BPE cache warm) */
  steadyPerSec: number;
}

export function tokenizerThroughput(tokenizer: ClipTokenizer, texts: readonly string[], batch = 256): TokenizerResult {
  const pass = (): number => {
    const t0 = performance.now();
    for (let i = 0; i < texts.length; i += batch) tokenizer.tokenizeBatch(texts.slice(i, i + batch));
    return (performance.now() - t0) / 1000;
  };
  const cold = pass();
  const warm = Math.min(pass(), pass());
  return {
    captions: texts.length,
    avgChars: texts.reduce((n, t) => n + t.length, 0) / texts.length,
    coldPerSec: texts.length / cold,
    steadyPerSec: texts.length / warm,
  };
}

export interface TimedStep {
  wallMs: number;
  cpuMs: number;
}

/** Mean wall and process-CPU time per call after 3 warm-up calls. */
export async function timeStep(iterations: number, fn: () => unknown): Promise<TimedStep> {
  for (let i = 0; i < 3; i++) await fn();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) await fn();
  const wallMs = (performance.now() - t0) / iterations;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 / iterations };
}

export interface PreprocessResult {
  image: string;
  bytes: number;
  width: number;
  height: number;
  mode: string;
  /** one thread (sharp.concurrency(1)), in the calling thread */
  total: TimedStep;
  decode: TimedStep;
  transform: TimedStep;
  imagesPerSecOneCore: number;
  /** through a PreprocessPool of `poolWorkers` worker threads, as the server runs it */
  poolWorkers: number;
  poolImagesPerSec: number;
}

export async function preprocessThroughput(
  label: string,
  bytes: Buffer,
  cfg: PreprocessConfig,
  iterations: number,
  poolWorkers: number,
): Promise<PreprocessResult> {
  const concurrency = sharp.concurrency();
  sharp.concurrency(1); // one core: libvips must not spread one decode over several threads
  let single: {
    total: TimedStep;
    decode: TimedStep;
    transform: TimedStep;
    mode: string;
    width: number;
    height: number;
  };
  try {
    const total = await timeStep(iterations, () => preprocessImage(bytes, cfg));
    const img = await decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg });
    const decode = await timeStep(iterations, () => decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg }));
    const transform = await timeStep(iterations, () => transformImage(img, cfg));
    single = { total, decode, transform, mode: img.mode, width: img.width, height: img.height };
  } finally {
    sharp.concurrency(concurrency);
  }
  let poolImagesPerSec = Number.NaN;
  if (poolWorkers > 0) {
    const pool = new PreprocessPool({ size: poolWorkers, cfg });
    try {
      // Warm-up: every worker JIT-compiles its own copy of the code.
      for (let i = 0; i < 3; i++) await Promise.all(Array.from({ length: poolWorkers }, () => pool.run(bytes)));
      const n = iterations * poolWorkers;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: n }, () => pool.run(bytes)));
      poolImagesPerSec = n / ((performance.now() - t0) / 1000);
    } finally {
      await pool.close();
    }
  }
  return {
    image: label,
    bytes: bytes.length,
    ...single,
    imagesPerSecOneCore: 1000 / single.total.wallMs,
    poolWorkers,
    poolImagesPerSec,
  };
}

export interface ResponseEncodingResult {
  format: EmbeddingFormatName;
  embeddings: number;
  dim: number;
  /** building the messages and serialising the reply, per response */
  usPerResponse: number;
  responseBytes: number;
  embeddingsPerSec: number;
}

/** EmbedText replies as the handlers build and grpc-js serialises them. */
export async function responseEncoding(
  dim: number,
  batch: number,
  format: EmbeddingFormatName,
  iterations: number,
): Promise<ResponseEncodingResult> {
  const serialize = loadProtos().embeddingService.EmbedText.responseSerialize as (m: EmbedTextResponse) => Buffer;
  const vectors = Array.from({ length: batch }, (_, r) =>
    Float32Array.from({ length: dim }, (_, i) => Math.sin(r * dim + i)),
  );
  let bytes = 0;
  const step = await timeStep(iterations, () => {
    const msg: EmbedTextResponse = {
      embeddings: vectors.map((v) => embeddingMessage(v, format)),
      dim,
      modelVersion: 'bench',
    };
    bytes = serialize(msg).length;
  });
  return {
    format,
    embeddings: batch,
    dim,
    usPerResponse: step.wallMs * 1000,
    responseBytes: bytes,
    embeddingsPerSec: (batch * 1000) / step.wallMs,
  };
}
