/**
 * EmbedStream against the real server and demo model: per-item results and errors keyed by the
 * client's ids, and HTTP/2 flow control — a client that stops reading stops the server from
 * reading, so the server's backlog stays bounded, and every item still comes back exactly once.
 */
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import { RunningServer } from '../../../server/src/serve/server';
import type { EmbeddingServiceClient } from '../../../server/src/grpc/generated/clipserve/v1/EmbeddingService';
import { embeddingClient, type TypedClient } from '../../helpers/clients';
import { startTestServer } from '../../helpers/server';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('EmbedStream (real server, demo model)', () => {
  let server: RunningServer;
  let client: TypedClient<EmbeddingServiceClient>;
  let png: Buffer;
  const MAX_BATCH = 32;

  beforeAll(async () => {
    server = await startTestServer({ maxBatchSize: MAX_BATCH });
    client = embeddingClient(server.port);
    png = await sharp({ create: { width: 70, height: 90, channels: 3, background: { r: 90, g: 160, b: 20 } } })
      .png()
      .toBuffer();
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown(1);
  });

  test('mixed items come back once each with their ids; a bad item gets its own status and the stream goes on', async () => {
    const call = client.raw.EmbedStream();
    const results: Any[] = [];
    call.on('data', (r: Any) => results.push(r));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('error', () => undefined); // the status promise reports failures
    call.write({ id: 't1', text: 'a small dog' });
    call.write({ id: 'i1', image: png, format: 'EMBEDDING_FORMAT_F32LE_BYTES' });
    call.write({ id: 'bad-image', image: Buffer.from('GIF89a-but-not-really') });
    call.write({ id: 'no-input' });
    call.write({ id: 'pinned-wrong', text: 'x', modelVersion: 'nope' });
    call.write({ id: 't2', text: 'a small dog', raw: true });
    call.write({ id: 'too-long', text: 'z'.repeat(20_000) });
    call.end();
    expect((await status).code).toBe(grpc.status.OK);

    const byId = new Map(results.map((r) => [r.id, r]));
    expect(results).toHaveLength(7);
    expect(byId.size).toBe(7);
    const [single] = (await client.EmbedText({ texts: ['a small dog'] })).embeddings;
    expect(byId.get('t1')).toMatchObject({
      result: 'embedding',
      modality: 'MODALITY_TEXT',
      modelVersion: server.model.info.version,
    });
    expect(byId.get('t1')!.embedding.values).toEqual(single.values);
    expect(Math.hypot(...byId.get('t2')!.embedding.values)).not.toBeCloseTo(1, 3); // raw
    expect(byId.get('i1')!.embedding.valuesF32le).toHaveLength(4 * 32);
    expect(byId.get('bad-image')).toMatchObject({
      result: 'error',
      modality: 'MODALITY_IMAGE',
      error: { code: grpc.status.INVALID_ARGUMENT },
    });
    expect(byId.get('bad-image')!.error.message).toMatch(/^item "bad-image": /);
    expect(byId.get('no-input')).toMatchObject({
      result: 'error',
      error: { code: grpc.status.INVALID_ARGUMENT, message: 'item "no-input": one of text or image is required' },
    });
    expect(byId.get('too-long')).toMatchObject({
      result: 'error',
      modality: 'MODALITY_TEXT',
      error: { code: grpc.status.INVALID_ARGUMENT },
    });
    expect(byId.get('too-long')!.error.message).toMatch(
      /^item "too-long": text is 20000 characters, over the limit of 16384/,
    );
    expect(byId.get('pinned-wrong')).toMatchObject({
      result: 'error',
      modelVersion: 'nope',
      error: { code: grpc.status.NOT_FOUND },
    });
  });

  test('10,000 mixed items with a client that pauses reading: bounded server backlog, every item exactly once', async () => {
    const N = 10_000;
    const isImage = (i: number) => i % 10 === 0;
    const isBad = (i: number) => i % 1000 === 500;
    const call = client.raw.EmbedStream();
    const seen = new Map<string, number>();
    const errors: string[] = [];
    let reading = true;
    call.on('data', (r: Any) => {
      seen.set(r.id, (seen.get(r.id) ?? 0) + 1);
      if (r.result === 'error') errors.push(r.id);
      if (reading && seen.size >= 200) {
        reading = false;
        call.pause(); // the slow reader
      }
    });
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('error', () => undefined); // the status promise reports failures

    const writer = (async () => {
      for (let i = 0; i < N; i++) {
        const id = `item-${i}`;
        const item = isBad(i)
          ? { id, image: Buffer.from('corrupt') }
          : isImage(i)
            ? { id, image: png }
            : { id, text: `caption number ${i} for the stream test` };
        if (!call.write(item)) await once(call, 'drain');
      }
      call.end();
    })();

    // While the client does not read, the server must stop reading too (its backlog hit the
    // window), long before the end of the stream; what the client keeps writing waits in HTTP/2
    // flow control, not in server memory.
    const received = () => server.stats().streams.itemsReceived;
    await waitFor(() => !reading, 20_000);
    await waitUntilStable(received, 600, 20_000);
    const stalledAt = received();
    expect(stalledAt).toBeLessThan(N);
    await sleep(300);
    expect(received()).toBe(stalledAt);
    const window = Math.max(8, 2 * MAX_BATCH);
    expect(server.stats().streams.peakBacklog).toBeLessThanOrEqual(window);
    const answeredWhilePaused = seen.size;

    call.resume();
    await writer;
    expect((await status).code).toBe(grpc.status.OK);
    expect(seen.size).toBe(N);
    expect([...seen.values()].every((c) => c === 1)).toBe(true);
    expect(errors.sort()).toEqual(
      Array.from({ length: N }, (_, i) => i)
        .filter(isBad)
        .map((i) => `item-${i}`)
        .sort(),
    );
    expect(server.stats().streams.peakBacklog).toBeLessThanOrEqual(window);
    console.log(
      `stream flow control: server read ${stalledAt}/${N} items while the client paused (${answeredWhilePaused} answered); peak server backlog ${server.stats().streams.peakBacklog} (window ${window})`,
    );
  });
});

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('condition not met in time');
    await sleep(20);
  }
}

/** Resolves once value() has not changed for `quietMs`. */
async function waitUntilStable(value: () => number, quietMs: number, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  let last = value();
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`value kept changing for ${timeoutMs} ms (now ${value()})`);
    await sleep(50);
    const v = value();
    if (v !== last) {
      last = v;
      since = Date.now();
    }
  }
}
