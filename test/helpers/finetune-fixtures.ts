/**
 * Fixtures for the fine-tune suites: a synthetic icon dataset rendered with sharp (shapes ×
 * colours × backgrounds, captions like "a red star on a white background"), gRPC clients of the
 * clipserve.v1 services, and small call helpers.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import sharp from 'sharp';
import { PROTO_DIR } from '../../server/src/util/paths';

export type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
export type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'cross'] as const;
export const COLOURS: Record<string, string> = { red: '#e6194b', green: '#3cb44b', blue: '#4363d8', yellow: '#ffe119', purple: '#911eb4', orange: '#f58231' };
export const BACKGROUNDS: Record<string, string> = { white: '#ffffff', black: '#000000', grey: '#808080', pink: '#fabed4', teal: '#469990' };

function shapeSvg(shape: string, fill: string, s: number): string {
  const c = s / 2;
  const r = s * 0.34;
  switch (shape) {
    case 'circle':
      return `<circle cx="${c}" cy="${c}" r="${r}" fill="${fill}"/>`;
    case 'square':
      return `<rect x="${c - r}" y="${c - r}" width="${2 * r}" height="${2 * r}" fill="${fill}"/>`;
    case 'triangle':
      return `<polygon points="${c},${c - r} ${c + r},${c + r} ${c - r},${c + r}" fill="${fill}"/>`;
    case 'star': {
      const pts: string[] = [];
      for (let i = 0; i < 10; i++) {
        const a = (Math.PI / 5) * i - Math.PI / 2;
        const rr = i % 2 ? r * 0.45 : r;
        pts.push(`${(c + rr * Math.cos(a)).toFixed(2)},${(c + rr * Math.sin(a)).toFixed(2)}`);
      }
      return `<polygon points="${pts.join(' ')}" fill="${fill}"/>`;
    }
    case 'cross':
      return `<rect x="${c - r}" y="${c - r / 3}" width="${2 * r}" height="${(2 * r) / 3}" fill="${fill}"/><rect x="${c - r / 3}" y="${c - r}" width="${(2 * r) / 3}" height="${2 * r}" fill="${fill}"/>`;
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

export async function renderIcon(shape: string, colour: string, background: string, size = 64): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}"><rect width="${size}" height="${size}" fill="${BACKGROUNDS[background]}"/>${shapeSvg(shape, COLOURS[colour], size)}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** Every shape × colour × background once (150 pairs), in a fixed order. */
export async function iconDataset(size = 64): Promise<{ image: Buffer; caption: string }[]> {
  const out: { image: Buffer; caption: string }[] = [];
  for (const shape of SHAPES) {
    for (const colour of Object.keys(COLOURS)) {
      for (const bg of Object.keys(BACKGROUNDS)) out.push({ image: await renderIcon(shape, colour, bg, size), caption: `a ${colour} ${shape} on a ${bg} background` });
    }
  }
  return out;
}

let pkgCache: Any | undefined;
function pkg(): Any {
  if (!pkgCache) {
    const def = protoLoader.loadSync(['clipserve/v1/embedding.proto', 'clipserve/v1/finetune.proto', 'clipserve/v1/models.proto'], {
      includeDirs: [PROTO_DIR],
      defaults: true,
      oneofs: true,
      enums: String,
      longs: Number,
    });
    pkgCache = grpc.loadPackageDefinition(def) as Any;
  }
  return pkgCache;
}

export function client(service: 'EmbeddingService' | 'FineTuneService' | 'ModelService', port: number): Client {
  return new (pkg().clipserve.v1[service])(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20, 'grpc.max_receive_message_length': 64 << 20 }) as Client;
}

export function unary(c: Client, method: string, req: object, opts: grpc.CallOptions = {}): Promise<Any> {
  return new Promise((resolve, reject) =>
    (c[method] as (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Any) => void) => void)(req, new grpc.Metadata(), opts, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

export async function rejection(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** UploadDataset with image+caption pairs; resolves with the Dataset message. */
export function uploadPairs(c: Client, name: string, pairs: { image: Uint8Array; caption: string }[]): Promise<Any> {
  return new Promise((resolve, reject) => {
    const call = (c.UploadDataset as (cb: (e: grpc.ServiceError | null, r: Any) => void) => grpc.ClientWritableStream<Any>)((err, res) => (err ? reject(err) : resolve(res.dataset)));
    call.write({ header: { name, format: 'DATASET_FORMAT_PAIRS' } });
    for (const p of pairs) call.write({ pair: { image: p.image, caption: p.caption } });
    call.end();
  });
}

/** Collects a job's events until the stream ends (the job reached a terminal state). */
export function watchToEnd(c: Client, jobId: string, afterSequence = 0, onEvent?: (e: Any) => void): Promise<Any[]> {
  return new Promise((resolve, reject) => {
    const events: Any[] = [];
    const call = (c.WatchFineTuneJob as (r: object) => grpc.ClientReadableStream<Any>)({ jobId, afterSequence });
    call.on('data', (m: Any) => {
      events.push(m);
      onEvent?.(m);
    });
    call.on('error', reject);
    call.on('end', () => resolve(events));
  });
}

/** Polls GetFineTuneJob until `pred` holds. */
export async function waitForJob(c: Client, jobId: string, pred: (job: Any) => boolean, timeoutMs = 60_000): Promise<Any> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const { job } = await unary(c, 'GetFineTuneJob', { jobId });
    if (pred(job)) return job;
    if (Date.now() > end) throw new Error(`job ${jobId} did not reach the expected state in ${timeoutMs} ms (now ${job.state})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
