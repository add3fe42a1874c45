/**
 * Fixtures for the fine-tune suites: a synthetic icon dataset rendered with sharp (shapes ×
 * colours × backgrounds, captions like "a red star on a white background"), untyped gRPC clients of
 * the clipserve.v1 services (typed ones are in clients.ts), and small call helpers.
 */
import * as grpc from '@grpc/grpc-js';
import { clipserveApi } from './clients';

export type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
export type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export { BACKGROUNDS, COLOURS, iconDataset, renderIcon, SHAPES } from '../../server/src/eval/icon-set';

/** An untyped client of one clipserve.v1 service (64 MiB messages both ways), for the fine-tune suites' table-driven calls. */
export function client(service: 'EmbeddingService' | 'FineTuneService' | 'ModelService', port: number): Client {
  return new (clipserveApi()[service])(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': 64 << 20,
    'grpc.max_receive_message_length': 64 << 20,
  }) as unknown as Client;
}

export function unary(c: Client, method: string, req: object, opts: grpc.CallOptions = {}): Promise<Any> {
  return new Promise((resolve, reject) =>
    (
      c[method] as (
        r: object,
        m: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (e: grpc.ServiceError | null, r: Any) => void,
      ) => void
    )(req, new grpc.Metadata(), opts, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

export { rejection } from './clients';

/** UploadDataset with image+caption pairs; resolves with the Dataset message. */
export function uploadPairs(c: Client, name: string, pairs: { image: Uint8Array; caption: string }[]): Promise<Any> {
  return new Promise((resolve, reject) => {
    const call = (
      c.UploadDataset as (cb: (e: grpc.ServiceError | null, r: Any) => void) => grpc.ClientWritableStream<Any>
    )((err, res) => (err ? reject(err) : resolve(res.dataset)));
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
export async function waitForJob(
  c: Client,
  jobId: string,
  pred: (job: Any) => boolean,
  timeoutMs = 60_000,
): Promise<Any> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const { job } = await unary(c, 'GetFineTuneJob', { jobId });
    if (pred(job)) return job;
    if (Date.now() > end)
      throw new Error(`job ${jobId} did not reach the expected state in ${timeoutMs} ms (now ${job.state})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
