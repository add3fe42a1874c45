/**
 * @clipserve/sdk against a real clipserve server (child process, 127.0.0.1, demo model): every
 * client method, batching of a 10,000-text input, a 1,000-item stream with a slow consumer,
 * deadlines, aborts, typed errors with the failing item's index, and the LangChain adapter.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import type { ClipClient } from '../../../sdk/src/index';
import { loadSdk, SDK_DIR, startClipServer, tempDir, type ClipServerProcess, rejection } from '../../helpers/sdk';

const sdk = loadSdk();
const { ClipClient: Client, ClipServeError, Status } = sdk;

let server: ClipServerProcess;
let client: ClipClient;
let imageDir: string;
let images: Buffer[];

async function solidPng(r: number, g: number, b: number, size = 40): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r, g, b } } })
    .png()
    .toBuffer();
}

function norm(v: Float32Array): number {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

function expectClose(a: Float32Array, b: Float32Array, tol = 1e-4): void {
  expect(a.length).toBe(b.length);
  expect(sdk.cosine(a, b)).toBeGreaterThan(1 - tol);
}

beforeAll(async () => {
  server = await startClipServer();
  client = new Client({ address: server.address });
  imageDir = tempDir('sdk-images');
  images = await Promise.all(
    [
      [255, 0, 0],
      [0, 128, 255],
      [20, 200, 40],
      [250, 250, 250],
    ].map(([r, g, b]) => solidPng(r, g, b)),
  );
  images.forEach((img, i) => fs.writeFileSync(path.join(imageDir, `img${i}.png`), img));
});

afterAll(async () => {
  client?.close();
  await server?.stop();
  if (imageDir) fs.rmSync(imageDir, { recursive: true, force: true });
});

describe('service info', () => {
  test('modelInfo reports the model and the limits the batching relies on', async () => {
    const info = await client.modelInfo({ timeoutMs: 10_000 });
    expect(info.embedDim).toBeGreaterThan(0);
    expect(info.contextLength).toBeGreaterThan(0);
    expect(info.version).not.toBe('');
    expect(info.limits.maxItemsPerRequest).toBeGreaterThan(0);
    expect(info.limits.maxMessageBytes).toBeGreaterThan(0);
  });

  test('health is SERVING for the server and for EmbeddingService', async () => {
    expect(await client.health()).toBe('SERVING');
    expect(await client.health({ service: 'clipserve.v1.EmbeddingService' })).toBe('SERVING');
  });
});

describe('embeddings', () => {
  test('embedTexts: one unit Float32Array per text, in order; raw returns the unnormalized projection', async () => {
    const info = await client.modelInfo();
    const [a, b, a2] = await client.embedTexts(['a photo of a cat', 'a diagram of a circuit', 'a photo of a cat']);
    for (const v of [a, b, a2]) {
      expect(v).toBeInstanceOf(Float32Array);
      expect(v.length).toBe(info.embedDim);
      expect(norm(v)).toBeCloseTo(1, 4);
    }
    expect(Array.from(a)).toEqual(Array.from(a2));
    expect(sdk.cosine(a, b)).toBeLessThan(0.9999);
    const [raw] = await client.embedTexts(['a photo of a cat'], { raw: true });
    expect(Math.abs(norm(raw) - 1)).toBeGreaterThan(1e-3);
    expectClose(raw, a);
    expect(await client.embedTexts([])).toEqual([]);
  });

  test('embedImages takes Buffer, Uint8Array and file path alike', async () => {
    const u8 = new Uint8Array(images[1]);
    const [fromBuffer, fromU8, fromPath] = await client.embedImages([images[1], u8, path.join(imageDir, 'img1.png')]);
    expect(fromBuffer.length).toBeGreaterThan(0);
    expect(Array.from(fromU8)).toEqual(Array.from(fromBuffer));
    expect(Array.from(fromPath)).toEqual(Array.from(fromBuffer));
  });

  test('embed mixes texts and images and keeps input order', async () => {
    const texts = await client.embedTexts(['first', 'second']);
    const imgs = await client.embedImages([images[0], images[2]]);
    const mixed = await client.embed(
      [images[0], 'first', { image: images[2] }, { text: 'second' }].map((x) =>
        Buffer.isBuffer(x) ? { image: x } : x,
      ),
    );
    expectClose(mixed[0], imgs[0]);
    expectClose(mixed[1], texts[0]);
    expectClose(mixed[2], imgs[1]);
    expectClose(mixed[3], texts[1]);
  });

  test('10,000 texts are split into requests the server accepts, sent concurrently and reassembled in order', async () => {
    const { limits } = await client.modelInfo();
    const texts = Array.from({ length: 10_000 }, (_, i) => `item number ${i} of a long list`);
    const progress: number[] = [];
    const vectors = await client.embedTexts(texts, { onProgress: (p) => progress.push(p.completed), concurrency: 4 });
    expect(vectors).toHaveLength(10_000);
    // one progress report per request; every request within the server's per-request limit
    expect(progress).toHaveLength(Math.ceil(10_000 / limits.maxItemsPerRequest));
    expect(progress[progress.length - 1]).toBe(10_000);
    expect([...progress].sort((x, y) => x - y)).toEqual(progress);
    // spot checks: each vector belongs to its own text
    const probes = [0, 1, 255, 256, 4999, 7777, 9999];
    const single = await client.embedTexts(
      probes.map((i) => texts[i]),
      { maxItemsPerRequest: 1 },
    );
    probes.forEach((i, k) => {
      expectClose(vectors[i], single[k]);
      if (k > 0) expect(sdk.cosine(vectors[i], single[k - 1])).toBeLessThan(0.99999);
    });
  });

  test("requests are also cut by bytes to fit the client's message size limit", async () => {
    // Random noise does not compress: each PNG is ~6 KB, so a 20 KB send limit fits 2 per request.
    let seed = 7;
    const noise = await Promise.all(
      Array.from({ length: 6 }, () => {
        const raw = Buffer.alloc(40 * 50 * 3);
        for (let i = 0; i < raw.length; i++) {
          // xorshift32
          seed ^= seed << 13;
          seed ^= seed >>> 17;
          seed ^= seed << 5;
          raw[i] = seed & 0xff;
        }
        return sharp(raw, { raw: { width: 40, height: 50, channels: 3 } })
          .png()
          .toBuffer();
      }),
    );
    const small = new Client({ address: server.address, maxSendMessageBytes: 20_000 });
    try {
      const progress: number[] = [];
      const got = await small.embedImages(noise, { onProgress: (p) => progress.push(p.completed) });
      const totalBytes = noise.reduce((a, b) => a + b.length, 0);
      expect(progress.length).toBeGreaterThanOrEqual(Math.ceil(totalBytes / 20_000));
      expect(progress.length).toBeLessThan(noise.length);
      const direct = await client.embedImages(noise);
      got.forEach((v, i) => expectClose(v, direct[i]));
      // without splitting, the same images in one request exceed the limit
      const err = await rejection(small.similarity({ images: noise, texts: ['x'] }));
      expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    } finally {
      small.close();
    }
  });

  test('maxItemsPerRequest splits further than the server requires', async () => {
    const progress: number[] = [];
    const texts = Array.from({ length: 50 }, (_, i) => `t${i}`);
    const vectors = await client.embedTexts(texts, {
      maxItemsPerRequest: 7,
      concurrency: 2,
      onProgress: (p) => progress.push(p.completed),
    });
    expect(progress).toHaveLength(8);
    expect(vectors).toHaveLength(50);
    const whole = await client.embedTexts(texts);
    vectors.forEach((v, i) => expectClose(v, whole[i]));
  });
});

describe('streaming', () => {
  test('1,000 items with a slow consumer: ids preserved, in-flight bounded by backpressure', async () => {
    const maxInFlight = 16;
    let produced = 0;
    let consumed = 0;
    let worstLead = 0;
    async function* source(): AsyncGenerator<{ id: string; text?: string; image?: Buffer }> {
      for (let i = 0; i < 1000; i++) {
        produced++;
        worstLead = Math.max(worstLead, produced - consumed);
        yield i % 10 === 0
          ? { id: `img-${i}`, image: images[i % images.length] }
          : { id: `txt-${i}`, text: `streamed text ${i}` };
      }
    }
    const seen = new Map<string, Float32Array>();
    for await (const r of client.embedStream(source(), { maxInFlight })) {
      if (r.error) throw r.error;
      expect(seen.has(r.id)).toBe(false);
      seen.set(r.id, r.embedding);
      expect(r.modality).toBe(r.id.startsWith('img-') ? 'image' : 'text');
      consumed++;
      // a slow consumer: the producer must wait for it rather than run ahead
      if (consumed % 100 === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen.size).toBe(1000);
    // at most maxInFlight unanswered items plus the one being prepared
    expect(worstLead).toBeLessThanOrEqual(maxInFlight + 1);
    const [t5] = await client.embedTexts(['streamed text 5']);
    expectClose(seen.get('txt-5')!, t5);
    const [i20] = await client.embedImages([images[20 % images.length]]);
    expectClose(seen.get('img-20')!, i20);
  });

  test('a bad item is answered with its own error and the stream goes on; default ids are positions', async () => {
    const results = [];
    for await (const r of client.embedStream([
      { text: 'ok one' },
      { image: Buffer.from('not an image at all') },
      { text: 'ok two' },
    ]))
      results.push(r);
    expect(results.map((r) => r.id).sort()).toEqual(['0', '1', '2']);
    const bad = results.find((r) => r.id === '1')!;
    expect(bad.error).toBeInstanceOf(ClipServeError);
    expect(bad.error!.code).toBe(Status.INVALID_ARGUMENT);
    expect(results.filter((r) => r.embedding)).toHaveLength(2);
  });

  test('breaking out of the loop cancels the call and stops pulling from the source', async () => {
    let pulled = 0;
    function* endless(): Generator<{ text: string }> {
      for (;;) {
        pulled++;
        yield { text: `endless ${pulled}` };
      }
    }
    let got = 0;
    for await (const r of client.embedStream(endless(), { maxInFlight: 8 })) {
      expect(r.error).toBeUndefined();
      if (++got === 20) break;
    }
    const after = pulled;
    await new Promise((r) => setTimeout(r, 200));
    expect(pulled).toBeLessThanOrEqual(after + 1);
    expect(pulled).toBeLessThanOrEqual(20 + 8 + 2);
  });

  test('an aborted stream rejects with CANCELLED', async () => {
    const ac = new AbortController();
    function* many(): Generator<{ text: string }> {
      for (let i = 0; i < 100_000; i++) yield { text: `x${i}` };
    }
    let got = 0;
    const err = await rejection(
      (async () => {
        for await (const r of client.embedStream(many(), { signal: ac.signal })) {
          expect(r.error).toBeUndefined();
          if (++got === 5) ac.abort(new Error('user gave up'));
        }
      })(),
    );
    expect(err.code).toBe(Status.CANCELLED);
  });
});

describe('scoring', () => {
  test('similarity: logits both ways and per-image softmax over the texts', async () => {
    const texts = ['red', 'blue', 'green'];
    const s = await client.similarity({ images: images.slice(0, 2), texts });
    expect(s.logitsPerImage).toHaveLength(2);
    expect(s.logitsPerImage[0]).toHaveLength(3);
    expect(s.logitsPerText).toHaveLength(3);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) expect(s.logitsPerText[j][i]).toBeCloseTo(s.logitsPerImage[i][j], 4);
      expect(s.probs[i].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
    const [img0] = await client.embedImages([images[0]]);
    const [red] = await client.embedTexts(['red']);
    expect(s.logitsPerImage[0][0]).toBeCloseTo(s.logitScale * sdk.cosine(img0, red), 2);
  });

  test('rank: candidates of both kinds, best first, scores are cosines; topK truncates', async () => {
    const texts = ['alpha', 'beta', 'gamma'];
    const ranked = await client.rank({ image: images[2] }, { texts, images: [images[0], images[2]] });
    expect(ranked).toHaveLength(5);
    for (let i = 1; i < ranked.length; i++) expect(ranked[i - 1].score).toBeGreaterThanOrEqual(ranked[i].score);
    // the query image itself is a candidate: cosine 1, ranked first
    expect(ranked[0]).toMatchObject({ modality: 'image', index: 1 });
    expect(ranked[0].score).toBeCloseTo(1, 4);
    expect(ranked.reduce((a, r) => a + r.probability, 0)).toBeCloseTo(1, 4);
    const [q] = await client.embedTexts(['alpha']);
    const byText = await client.rank({ text: 'alpha' }, { texts }, { topK: 2 });
    expect(byText).toHaveLength(2);
    expect(byText[0]).toMatchObject({ modality: 'text', index: 0 });
    const [beta] = await client.embedTexts(['beta']);
    const betaRank = (await client.rank({ text: 'alpha' }, { texts })).find((r) => r.index === 1)!;
    expect(betaRank.score).toBeCloseTo(sdk.cosine(q, beta), 4);
  });

  test('classify: per image, labels sorted by probability; templates and topK apply', async () => {
    const labels = ['cat', 'dog', 'car'];
    const out = await client.classify(images.slice(0, 3), labels, {
      templates: ['a photo of a {}.', 'a drawing of a {}.'],
    });
    expect(out).toHaveLength(3);
    for (const c of out) {
      expect(c.map((l) => l.label).sort()).toEqual([...labels].sort());
      expect(c.reduce((a, l) => a + l.probability, 0)).toBeCloseTo(1, 4);
      for (let i = 1; i < c.length; i++) expect(c[i - 1].probability).toBeGreaterThanOrEqual(c[i].probability);
      for (const l of c) expect(labels[l.index]).toBe(l.label);
    }
    const top1 = await client.classify([images[0]], labels, { topK: 1 });
    expect(top1[0]).toHaveLength(1);
  });
});

describe('deadlines, aborts and errors', () => {
  test('a deadline that cannot be met fails with DEADLINE_EXCEEDED, for the whole batch operation', async () => {
    const texts = Array.from({ length: 3000 }, (_, i) => `deadline ${i}`);
    const t0 = Date.now();
    const err = await rejection(client.embedTexts(texts, { timeoutMs: 30 }));
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(Date.now() - t0).toBeLessThan(5000);
    const past = await rejection(client.modelInfo({ deadline: new Date(Date.now() - 1000) }));
    expect(past.code).toBe(Status.DEADLINE_EXCEEDED);
  });

  test('aborting cancels the requests in flight and rejects with CANCELLED; the client stays usable', async () => {
    const ac = new AbortController();
    const texts = Array.from({ length: 5000 }, (_, i) => `abort ${i}`);
    let progressCalls = 0;
    const t0 = Date.now();
    const err = await rejection(
      client.embedTexts(texts, {
        signal: ac.signal,
        maxItemsPerRequest: 100,
        concurrency: 2,
        onProgress: () => {
          if (++progressCalls === 1) ac.abort(new Error('stop'));
        },
      }),
    );
    expect(err.code).toBe(Status.CANCELLED);
    expect((err.cause as Error).message).toBe('stop');
    expect(progressCalls).toBeLessThan(50);
    expect(Date.now() - t0).toBeLessThan(20_000);
    const pre = new AbortController();
    pre.abort();
    expect(
      (await rejection(client.similarity({ images: [images[0]], texts: ['x'] }, { signal: pre.signal }))).code,
    ).toBe(Status.CANCELLED);
    expect(await client.embedTexts(['still works'])).toHaveLength(1);
  });

  test("a bad image fails with INVALID_ARGUMENT naming its index in the caller's list", async () => {
    const bad = Buffer.from('definitely not an image');
    const err = await rejection(
      client.embedImages([images[0], images[1], images[2], bad, images[0]], { maxItemsPerRequest: 2 }),
    );
    expect(err.code).toBe(Status.INVALID_ARGUMENT);
    expect(err.itemIndex).toBe(3);
    expect(err.details).toMatch(/images\[1\]/);
    const mixed = await rejection(client.embed(['a', { image: images[0] }, 'b', { image: bad }]));
    expect(mixed.itemIndex).toBe(3);
  });

  test('inputs are checked before sending', async () => {
    const notText = await rejection(client.embedTexts(['ok', 42 as unknown as string]));
    expect(notText.code).toBe(Status.INVALID_ARGUMENT);
    expect(notText.itemIndex).toBe(1);
    const missing = await rejection(client.embedImages([images[0], path.join(imageDir, 'missing.png')]));
    expect(missing.code).toBe(Status.NOT_FOUND);
    expect(missing.itemIndex).toBe(1);
    expect((await rejection(client.embed([{ nope: 1 } as never]))).code).toBe(Status.INVALID_ARGUMENT);
    expect(() => new Client({ address: 'http://example.com' })).toThrow(/scheme/);
    expect(() => new Client({ address: 'no-port' })).toThrow(/host:port/);
  });

  test("a text over the server's max_text_chars fails with its index, before sending", async () => {
    const { limits } = await client.modelInfo();
    expect(limits.maxTextChars).toBeGreaterThan(0);
    const texts = ['short', 'also short', 'x'.repeat(limits.maxTextChars + 1), 'short again'];
    // the client knows the limit (GetModelInfo) and refuses before sending
    const early = await rejection(client.embedTexts(texts, { maxItemsPerRequest: 1 }));
    expect(early).toMatchObject({ code: Status.INVALID_ARGUMENT, itemIndex: 2 });
    expect(early.details).toMatch(/at most/);
    // the server applies the same rule to what it is sent directly (Rank is not split)
    const server = await rejection(client.rank({ text: 'q' }, { texts }));
    expect(server.code).toBe(Status.INVALID_ARGUMENT);
    expect(server.details).toMatch(/texts\[2\]/);
    expect(server.itemIndex).toBe(2);
  });

  test('a pinned model version the server does not know fails with NOT_FOUND', async () => {
    const pinned = new Client({ address: server.address, modelVersion: 'not-the-served-version' });
    try {
      expect((await rejection(pinned.embedTexts(['x'], { maxItemsPerRequest: 4 }))).code).toBe(Status.NOT_FOUND);
    } finally {
      pinned.close();
    }
  });
});

describe('@clipserve/sdk/langchain', () => {
  test('ClipServeEmbeddings is a LangChain Embeddings over the same vectors, with embedImages', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { ClipServeEmbeddings } = require(
      path.join(SDK_DIR, 'dist', 'cjs', 'langchain.js'),
    ) as typeof import('../../../sdk/src/langchain');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Embeddings } = require(require.resolve('@langchain/core/embeddings', { paths: [SDK_DIR] }));
    const emb = new ClipServeEmbeddings({ client });
    expect(emb).toBeInstanceOf(Embeddings);
    const docs = await emb.embedDocuments(['one', 'two']);
    const q = await emb.embedQuery('two');
    const direct = await client.embedTexts(['one', 'two']);
    expect(docs).toHaveLength(2);
    expect(docs[1]).toEqual(Array.from(direct[1]));
    expect(q).toEqual(docs[1]);
    const [img] = await emb.embedImages([images[0]]);
    expect(img).toEqual(Array.from((await client.embedImages([images[0]]))[0]));
    const viaOptions = new ClipServeEmbeddings({ clientOptions: { address: server.address } });
    try {
      expect(await viaOptions.embedQuery('two')).toEqual(q);
    } finally {
      viaOptions.client.close();
    }
  });
});
