/**
 * EmbeddingService end to end: the real server (startServer) on 127.0.0.1:0 with the real tiny demo
 * model, called through @grpc/grpc-js. Expected values come from the loaded model directly
 * (tokenizer + encoders) and the runtime's own l2normalize / similarityLogits, so the test checks
 * the server's batching, scatter, normalization and CLIP heads, not a copy of them.
 */
import * as grpc from '@grpc/grpc-js';
import sharp from 'sharp';
import type { BatcherObserver, Modality, RejectReason } from '../../../server/src/batching';
import { l2normalize, similarityLogits } from '../../../server/src/inference/heads';
import type { EmbeddingServiceClient } from '../../../server/src/grpc/generated/clipserve/v1/EmbeddingService';
import { embeddingClient, fineTuneClient, modelClient, rejection, type TypedClient } from '../../helpers/clients';
import { startTestServer, type RunningServer } from '../../helpers/server';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Client = TypedClient<EmbeddingServiceClient>;

/** Channel options of the suites' client: images up to 8 MiB go out, so the server's limit is what answers. */
const CHANNEL = { 'grpc.max_send_message_length': 8 * 1024 * 1024 };

class RecordingObserver implements BatcherObserver {
  rejected: [Modality, RejectReason][] = [];
  queueDepth(): void {}
  batchRun(): void {}
  itemRejected(m: Modality, r: RejectReason): void {
    this.rejected.push([m, r]);
  }
  preprocessed(): void {}
  embedded(): void {}
}

async function gradientPng(w: number, h: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * 3;
      raw[o] = (x * 255) / w + seed * 40;
      raw[o + 1] = (y * 255) / h;
      raw[o + 2] = (seed * 97 + x * y) % 256;
    }
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tol);
}

describe('EmbeddingService (real server, demo model)', () => {
  let server: RunningServer;
  let client: Client;
  const observer = new RecordingObserver();
  let images: Buffer[];

  /** What the server should answer for texts: the model's raw features. */
  async function modelText(texts: string[]): Promise<Float32Array[]> {
    const m = server.model;
    return Promise.all(texts.map(async (t) => m.encodeText(m.tokenizer.tokenize(t, m.info.contextLength).ids, 1)));
  }
  async function modelImage(imgs: Buffer[]): Promise<Float32Array[]> {
    const m = server.model;
    return Promise.all(imgs.map(async (b) => m.encodeImage(await m.preprocessImage(b), 1)));
  }
  const norm = (v: Float32Array) => l2normalize(v, v.length);

  beforeAll(async () => {
    server = await startTestServer({
      maxBatchSize: 32,
      maxQueueDelayMs: 20,
      queueBound: 128,
      maxItemsPerRequest: 16,
      maxTextChars: 2000,
      maxImageBytes: 200_000,
      maxImagePixels: 1_000_000,
      maxMessageBytes: 1_000_000,
      observer,
    });
    client = embeddingClient(server.port, { channel: CHANNEL });
    images = await Promise.all([gradientPng(96, 80, 0), gradientPng(64, 64, 1), gradientPng(120, 50, 2)]);
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown(1);
  });

  test('EmbedText: L2-normalized model features per text, raw on request, truncation flagged', async () => {
    const long = Array.from({ length: 120 }, (_, i) => `word${i}`).join(' ');
    const texts = ['a photo of a cat', 'a diagram', long];
    const res = await client.EmbedText({ texts });
    const expected = await modelText(texts);
    expect(res.dim).toBe(server.model.info.embedDim);
    expect(res.modelVersion).toBe(server.model.info.version);
    expect(res.embeddings).toHaveLength(3);
    res.embeddings.forEach((e: Any, i: number) => {
      expectClose(e.values, norm(expected[i]), 1e-6);
      expect(Math.hypot(...e.values)).toBeCloseTo(1, 5);
    });
    expect(res.embeddings.map((e: Any) => e.truncated)).toEqual([false, false, true]);

    const raw = await client.EmbedText({ texts, raw: true });
    raw.embeddings.forEach((e: Any, i: number) => expectClose(e.values, expected[i], 1e-6));
  });

  test('EmbedText: f32le bytes carry exactly the float values', async () => {
    const texts = ['one', 'two'];
    const [floats, bytes] = await Promise.all([
      client.EmbedText({ texts }),
      client.EmbedText({ texts, format: 'EMBEDDING_FORMAT_F32LE_BYTES' }),
    ]);
    bytes.embeddings.forEach((e: Any, i: number) => {
      expect(e.values).toEqual([]);
      const buf: Buffer = e.valuesF32le;
      expect(buf.length).toBe(4 * server.model.info.embedDim);
      const decoded = Array.from({ length: buf.length / 4 }, (_, k) => buf.readFloatLE(4 * k));
      expect(decoded).toEqual(floats.embeddings[i].values);
    });
  });

  test('EmbedImage: normalized model features per image', async () => {
    const res = await client.EmbedImage({ images });
    const expected = await modelImage(images);
    expect(res.embeddings).toHaveLength(images.length);
    res.embeddings.forEach((e: Any, i: number) => expectClose(e.values, norm(expected[i]), 1e-6));
    const raw = await client.EmbedImage({ images: [images[1]], raw: true });
    expectClose(raw.embeddings[0].values, expected[1], 1e-6);
  });

  test('Similarity: model(image, text) logits both ways and softmax over texts', async () => {
    const texts = ['red', 'green', 'a long caption about nothing'];
    const res = await client.Similarity({ images: images.slice(0, 2), texts });
    const img = await modelImage(images.slice(0, 2));
    const txt = await modelText(texts);
    const dim = server.model.info.embedDim;
    const flat = (rows: Float32Array[]) => {
      const out = new Float32Array(rows.length * dim);
      rows.forEach((r, i) => out.set(r, i * dim));
      return out;
    };
    const ref = similarityLogits(flat(img), flat(txt), dim, server.model.info.logitScale);
    expectClose(
      res.logitsPerImage.flatMap((r: Any) => r.values),
      ref.logitsPerImage,
      1e-4,
    );
    expectClose(
      res.logitsPerText.flatMap((r: Any) => r.values),
      ref.logitsPerText,
      1e-4,
    );
    for (let i = 0; i < 2; i++) {
      const row = Array.from(ref.logitsPerImage.subarray(i * 3, i * 3 + 3));
      const exps = row.map((x) => Math.exp(x - Math.max(...row)));
      const sum = exps.reduce((a, b) => a + b, 0);
      expectClose(
        res.probs[i].values,
        exps.map((x) => x / sum),
        1e-6,
      );
    }
    expect(res.textTruncated).toEqual([false, false, false]);
    expect(res.logitScale).toBeCloseTo(server.model.info.logitScale, 5);
  });

  test('Rank: candidates of both modalities sorted by cosine, with logits, probabilities and top_k', async () => {
    const candidateTexts = ['alpha', 'beta', 'gamma'];
    const res = await client.Rank({ queryImage: images[0], candidateTexts, candidateImages: images.slice(1) });
    const q = norm((await modelImage([images[0]]))[0]);
    const t = (await modelText(candidateTexts)).map(norm);
    const i = (await modelImage(images.slice(1))).map(norm);
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, k) => s + x * b[k], 0);
    const expected = [
      ...t.map((v, index) => ({ modality: 'MODALITY_TEXT', index, score: dot(q, v) })),
      ...i.map((v, index) => ({ modality: 'MODALITY_IMAGE', index, score: dot(q, v) })),
    ].sort((a, b) => b.score - a.score);
    expect(res.results.map((r: Any) => [r.modality, r.index])).toEqual(expected.map((e) => [e.modality, e.index]));
    res.results.forEach((r: Any, k: number) => {
      expect(r.score).toBeCloseTo(expected[k].score, 5);
      expect(r.logit).toBeCloseTo(expected[k].score * server.model.info.logitScale, 4);
    });
    expect(res.results.reduce((s: number, r: Any) => s + r.probability, 0)).toBeCloseTo(1, 5);
    const top = await client.Rank({ queryText: 'alpha', candidateTexts, topK: 2 });
    expect(top.results).toHaveLength(2);
    expect(top.results[0]).toMatchObject({ modality: 'MODALITY_TEXT', index: 0 }); // identical text ranks first
    expect(top.results[0].score).toBeCloseTo(1, 5);
  });

  test("Classify: labels holding String.replace patterns ($&, $', $`, $$) are inserted literally", async () => {
    const labels = ['$&', "$'s cat", 'a $` b', '$$ dog'];
    const template = 'a photo of {}.';
    const res = await client.Classify({ images: [images[0]], labels, templates: [template] });
    const img = norm((await modelImage([images[0]]))[0]);
    const literal = (await modelText(labels.map((l) => `a photo of ${l}.`))).map(norm);
    for (const l of res.classifications[0].labels) {
      expect(l.label).toBe(labels[l.index]);
      expect(l.logit).toBeCloseTo(
        server.model.info.logitScale * img.reduce((s, x, k) => s + x * literal[l.index][k], 0),
        4,
      );
    }
  });

  test('Classify: open_clip zero-shot weights (mean of normalized template embeddings) and probabilities', async () => {
    const labels = ['cat', 'dog', 'car'];
    const templates = ['a photo of a {}.', 'a drawing of a {}.'];
    const res = await client.Classify({ images: images.slice(0, 2), labels, templates });
    const dim = server.model.info.embedDim;
    const weights = await Promise.all(
      labels.map(async (label) => {
        const embs = (await modelText(templates.map((t) => t.replace('{}', label)))).map(norm);
        const mean = new Float32Array(dim);
        embs.forEach((e) => e.forEach((x, k) => (mean[k] += x / embs.length)));
        return norm(mean);
      }),
    );
    const imgs = (await modelImage(images.slice(0, 2))).map(norm);
    imgs.forEach((img, n) => {
      const logits = weights.map((w) => server.model.info.logitScale * img.reduce((s, x, k) => s + x * w[k], 0));
      const exps = logits.map((x) => Math.exp(x - Math.max(...logits)));
      const probs = exps.map((x) => x / exps.reduce((a, b) => a + b, 0));
      const got = res.classifications[n].labels;
      expect(got.map((l: Any) => l.probability)).toEqual([...got.map((l: Any) => l.probability)].sort((a, b) => b - a));
      for (const l of got) {
        expect(l.label).toBe(labels[l.index]);
        expect(l.probability).toBeCloseTo(probs[l.index], 5);
        expect(l.logit).toBeCloseTo(logits[l.index], 4);
      }
    });
    // Without templates the default "a photo of a {}." is used: same as giving it explicitly.
    const [byDefault, explicit] = await Promise.all([
      client.Classify({ images: [images[0]], labels, topK: 2 }),
      client.Classify({ images: [images[0]], labels, templates: ['a photo of a {}.'], topK: 2 }),
    ]);
    expect(byDefault.classifications[0].labels).toHaveLength(2);
    expect(byDefault).toEqual(explicit);
  });

  test('GetModelInfo: the demo model and the configured limits', async () => {
    const info = await client.GetModelInfo({});
    expect(info).toMatchObject({
      name: server.model.info.name,
      version: server.model.info.version,
      embedDim: 32,
      contextLength: 77,
      provider: 'cpu',
      demo: true,
      precision: 'fp32',
      limits: {
        maxItemsPerRequest: 16,
        maxImageBytes: 200_000,
        maxImagePixels: 1_000_000,
        maxMessageBytes: 1_000_000,
        maxBatchSize: 32,
        maxTextChars: 2000,
      },
    });
    expect(info.logitScale).toBeCloseTo(server.model.info.logitScale, 5);
  });

  test('model_version: the served version is accepted; without --data-dir any other is NOT_FOUND, saying how to serve more', async () => {
    const version = server.model.info.version;
    await expect(client.EmbedText({ texts: ['x'], modelVersion: version })).resolves.toMatchObject({
      modelVersion: version,
    });
    const err = await rejection(client.EmbedText({ texts: ['x'], modelVersion: 'v999' }));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    expect(err.details).toBe(
      `no model version "v999": this server serves only "${version}"; start it with --data-dir to serve fine-tuned versions`,
    );
    const long = await rejection(client.EmbedText({ texts: ['x'], modelVersion: 'v'.repeat(5000) }));
    expect(long.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(long.details).toBe('model_version: 5000 characters; no model version is longer than 128');
    const info = await client.GetModelInfo({ modelVersion: version });
    expect(info).toMatchObject({ version, activeVersion: version, loadedVersions: [version] });
    expect((await rejection(client.GetModelInfo({ modelVersion: 'v999' }))).code).toBe(grpc.status.NOT_FOUND);
  });

  test('without --data-dir, FineTuneService and ModelService calls say how to enable them', async () => {
    const models = modelClient(server.port);
    const ft = fineTuneClient(server.port);
    try {
      const why =
        'fine-tuning and the model registry need a data directory: start the server with --data-dir <dir> (or CLIPSERVE_DATA_DIR)';
      const list = await rejection(models.ListModels({}));
      expect([list.code, list.details]).toEqual([grpc.status.UNIMPLEMENTED, `ListModels: ${why}`]);
      const create = await rejection(ft.CreateFineTuneJob({ trainingFile: 'x' }));
      expect([create.code, create.details]).toEqual([grpc.status.UNIMPLEMENTED, `CreateFineTuneJob: ${why}`]);
      const watch = await new Promise<grpc.ServiceError>((resolve) => {
        const call = ft.raw.WatchFineTuneJob({ jobId: 'x' });
        call.on('data', () => undefined);
        call.on('error', resolve);
      });
      expect([watch.code, watch.details]).toEqual([grpc.status.UNIMPLEMENTED, `WatchFineTuneJob: ${why}`]);
      const upload = await new Promise<grpc.ServiceError>((resolve) => {
        const call = ft.raw.UploadDataset((e) => resolve(e!));
        call.write({ header: { name: 'x', format: 'DATASET_FORMAT_PAIRS' } });
        call.end();
      });
      expect([upload.code, upload.details]).toEqual([grpc.status.UNIMPLEMENTED, `UploadDataset: ${why}`]);
    } finally {
      models.close();
      ft.close();
    }
  });

  test('batching: 64 concurrent single-text calls run in at most ceil(64/32)+1 inference runs, each equal to its single call', async () => {
    const texts = Array.from({ length: 64 }, (_, i) => `concurrent caption number ${i}`);
    const single: number[][] = [];
    for (const t of texts) single.push((await client.EmbedText({ texts: [t] })).embeddings[0].values);
    const before = server.stats().batchers!.text.runs;
    const results = await Promise.all(texts.map((t) => client.EmbedText({ texts: [t] })));
    const runs = server.stats().batchers!.text.runs - before;
    expect(runs).toBeLessThanOrEqual(Math.ceil(64 / 32) + 1);
    results.forEach((r, i) => expectClose(r.embeddings[0].values, single[i], 1e-5));
  });

  test.each([
    [
      'EmbedText with no texts',
      'EmbedText',
      () => ({ texts: [] }),
      grpc.status.INVALID_ARGUMENT,
      /^texts: at least one item is required/,
    ],
    [
      'EmbedText over the item limit',
      'EmbedText',
      () => ({ texts: Array(17).fill('x') }),
      grpc.status.INVALID_ARGUMENT,
      /^texts: 17 items exceed the limit of 16/,
    ],
    [
      'a text over max-text-chars',
      'EmbedText',
      () => ({ texts: ['ok', 'x'.repeat(2001)] }),
      grpc.status.INVALID_ARGUMENT,
      /^texts\[1\]: text is 2001 characters, over the limit of 2000/,
    ],
    [
      'a Rank query over max-text-chars',
      'Rank',
      () => ({ queryText: 'y'.repeat(2500), candidateTexts: ['a'] }),
      grpc.status.INVALID_ARGUMENT,
      /^query_text: text is 2500 characters/,
    ],
    [
      'EmbedImage with no images',
      'EmbedImage',
      () => ({ images: [] }),
      grpc.status.INVALID_ARGUMENT,
      /^images: at least one item/,
    ],
    [
      'an undecodable image',
      'EmbedImage',
      () => ({ images: [images[0], Buffer.from('not an image at all')] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[1\]: unsupported or unrecognised image format/,
    ],
    [
      'an empty image',
      'EmbedImage',
      () => ({ images: [Buffer.alloc(0)] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[0\]: image is empty/,
    ],
    [
      'a truncated PNG',
      'EmbedImage',
      () => ({ images: [images[0].subarray(0, 200)] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[0\]: .*(corrupt|cannot decode)/i,
    ],
    [
      'an image over max-image-bytes',
      'EmbedImage',
      () => ({ images: [Buffer.concat([images[0], Buffer.alloc(210_000)])] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[0\]: image is 2\d{5} bytes, more than the limit of 200000/,
    ],
    [
      'an image over max-image-pixels',
      'EmbedImage',
      () => ({ images: [bigPng] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[0\]: .*2000x1000.*limit of 1000000/,
    ],
    [
      'a message over max-message-bytes',
      'EmbedImage',
      () => ({ images: [Buffer.alloc(1_200_000)] }),
      grpc.status.RESOURCE_EXHAUSTED,
      /larger than max/,
    ],
    [
      'Similarity without texts',
      'Similarity',
      () => ({ images: [images[0]] }),
      grpc.status.INVALID_ARGUMENT,
      /^texts: at least one item/,
    ],
    [
      'Similarity with a bad image',
      'Similarity',
      () => ({ images: [images[0], Buffer.from('xx')], texts: ['a'] }),
      grpc.status.INVALID_ARGUMENT,
      /^images\[1\]: /,
    ],
    [
      'Rank without a query',
      'Rank',
      () => ({ candidateTexts: ['a'] }),
      grpc.status.INVALID_ARGUMENT,
      /^query: one of query_text or query_image is required/,
    ],
    [
      'Rank without candidates',
      'Rank',
      () => ({ queryText: 'a' }),
      grpc.status.INVALID_ARGUMENT,
      /^candidate_texts \+ candidate_images: at least one item/,
    ],
    [
      'Rank with a bad candidate image',
      'Rank',
      () => ({ queryText: 'a', candidateImages: [images[0], Buffer.from('zz')] }),
      grpc.status.INVALID_ARGUMENT,
      /^candidate_images\[1\]: /,
    ],
    [
      'Classify with a template without {}',
      'Classify',
      () => ({ images: [images[0]], labels: ['a'], templates: ['a photo'] }),
      grpc.status.INVALID_ARGUMENT,
      /^templates\[0\]: must contain exactly one "\{\}"/,
    ],
    [
      'Classify with an empty label',
      'Classify',
      () => ({ images: [images[0]], labels: ['a', ' '] }),
      grpc.status.INVALID_ARGUMENT,
      /^labels\[1\]: empty label/,
    ],
    [
      'Classify over the prompt limit',
      'Classify',
      () => ({ images: [images[0]], labels: Array.from({ length: 9 }, (_, i) => `l${i}`), templates: ['{}', 'a {}'] }),
      grpc.status.INVALID_ARGUMENT,
      /^labels × templates: 18 items in total exceed the limit of 16/,
    ],
  ])('bad input: %s', async (_name, method, request, code, message) => {
    // The table holds deliberately bad requests for several methods: call them by name, untyped.
    const byName = (name: string, req: object) =>
      (client as unknown as Record<string, (r: object) => Promise<Any>>)[name](req);
    const err = await rejection(byName(method, request()));
    expect({ code: err.code, details: err.details }).toEqual({ code, details: expect.stringMatching(message) });
    // The server keeps serving.
    await expect(client.EmbedText({ texts: ['still alive'] })).resolves.toMatchObject({ dim: 32 });
  });

  test('image rejections are reported to the observer with their reason', () => {
    const reasons = observer.rejected.filter(([m]) => m === 'image').map(([, r]) => r);
    expect(reasons).toEqual(expect.arrayContaining(['bad_image', 'too_large']));
  });

  let bigPng: Buffer;
  beforeAll(async () => {
    bigPng = await sharp({ create: { width: 2000, height: 1000, channels: 3, background: { r: 1, g: 2, b: 3 } } })
      .png()
      .toBuffer();
  });
});

describe('EmbeddingService overload, deadline and cancellation (slow queue)', () => {
  let server: RunningServer;
  let client: Client;
  const observer = new RecordingObserver();

  beforeAll(async () => {
    // Batches never fill (64 > bound) and wait 1.5 s: items stay queued long enough to observe.
    server = await startTestServer({
      maxBatchSize: 64,
      maxQueueDelayMs: 1500,
      queueBound: 8,
      maxItemsPerRequest: 8,
      observer,
    });
    client = embeddingClient(server.port, { channel: CHANNEL });
  });

  afterAll(async () => {
    client?.close();
    await server?.shutdown(1);
  });

  test('a full queue answers RESOURCE_EXHAUSTED at once; queued work still completes', async () => {
    const first = client.EmbedText({ texts: Array(8).fill('fills the queue') });
    await waitFor(() => server.stats().batchers!.text.depth === 8);
    const t0 = Date.now();
    const err = await rejection(client.EmbedText({ texts: ['one more'] }));
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(err.details).toMatch(/text queue is full/);
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(first).resolves.toMatchObject({ embeddings: expect.any(Array) });
    expect(observer.rejected).toContainEqual(['text', 'overload']);
  });

  test('DEADLINE_EXCEEDED when the deadline passes while queued; the item is dropped before inference', async () => {
    const err = await rejection(client.EmbedText({ texts: ['too slow'] }, undefined, { deadline: Date.now() + 300 }));
    expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => observer.rejected.some(([m, r]) => m === 'text' && r === 'deadline'));
    expect(server.stats().batchers!.text.depth).toBe(0);
  });

  test('CANCELLED when the client cancels; the server drops the queued item', async () => {
    const cancelledBefore = observer.rejected.filter(([m, r]) => m === 'text' && r === 'cancelled').length;
    const call = client.raw.EmbedText({ texts: ['never mind'] }, () => undefined);
    await waitFor(() => server.stats().batchers!.text.depth === 1);
    const done = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.cancel();
    expect((await done).code).toBe(grpc.status.CANCELLED);
    await waitFor(
      () => observer.rejected.filter(([m, r]) => m === 'text' && r === 'cancelled').length === cancelledBefore + 1,
    );
    expect(server.stats().batchers!.text.depth).toBe(0);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
