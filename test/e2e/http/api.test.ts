/**
 * The OpenAI-compatible HTTP API end to end: the real server (startServer, demo model) with
 * `httpPort: 'auto'`, called by the clients users would point at it (the official `openai` package
 * and LangChain's OpenAIEmbeddings) for texts, and by plain fetch for images, errors, auth and
 * limits. Expected vectors come from the loaded model itself (tokenizer + encoders), normalized
 * with the runtime's own l2normalize, so the test checks the HTTP path, not a copy of it.
 */
import { request as httpRequest } from 'node:http';
import { OpenAIEmbeddings } from '@langchain/openai';
import OpenAI from 'openai';
import sharp from 'sharp';
import { l2normalize } from '../../../server/src/inference/heads';
import { loadServedModel } from '../../../server/src/serve/model-loader';
import { seededRandom } from '../../../server/src/util/random';
import { RunningServer } from '../../../server/src/serve/server';
import { startTestServer } from '../../helpers/server';

const EMBED_KEY = 'http-embed-key-0123456789';
const FINETUNE_KEY = 'http-finetune-key-0123456789';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function png(w: number, h: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * (seed + 3) + seed * 41) % 256;
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tol);
}

/** POST/GET with a JSON body; resolves with the status, headers and parsed body. */
async function http(
  base: string,
  route: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Any; headers: Headers }> {
  const res = await fetch(`${base}${route}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Any) : {}, headers: res.headers };
}

/** An OpenAI-shaped error with this status and code. */
function expectError(res: { status: number; body: Any }, status: number, code: string, param?: string | null): void {
  expect({ status: res.status, code: res.body.error?.code }).toEqual({ status, code });
  expect(typeof res.body.error.message).toBe('string');
  expect(['invalid_request_error', 'requests', 'server_error']).toContain(res.body.error.type);
  if (param !== undefined) expect(res.body.error.param).toBe(param);
}

describe('HTTP API (real server, demo model)', () => {
  let server: RunningServer;
  let base: string;
  let version: string;
  let images: Buffer[];

  async function modelTexts(texts: string[]): Promise<{ vectors: Float32Array[]; tokens: number }> {
    const m = server.model;
    let tokens = 0;
    const vectors = await Promise.all(
      texts.map(async (t) => {
        const tok = m.tokenizer.tokenize(t, m.info.contextLength);
        tokens += tok.eotIndex + 1;
        const v = await m.encodeText(tok.ids, 1);
        return l2normalize(v, v.length);
      }),
    );
    return { vectors, tokens };
  }
  async function modelImages(imgs: Buffer[]): Promise<Float32Array[]> {
    const m = server.model;
    return Promise.all(
      imgs.map(async (b) => {
        const v = await m.encodeImage(await m.preprocessImage(b), 1);
        return l2normalize(v, v.length);
      }),
    );
  }

  beforeAll(async () => {
    server = await startTestServer({
      httpPort: 'auto',
      maxItemsPerRequest: 8,
      maxTextChars: 500,
      maxImageBytes: 400_000,
      maxMessageBytes: 1_000_000,
    });
    base = `http://127.0.0.1:${server.httpPort}`;
    version = server.model.info.version;
    images = await Promise.all([png(80, 64, 0), png(64, 64, 1)]);
  });

  afterAll(async () => {
    await server?.shutdown(1);
  });

  test('openai client: embeddings.create (its default base64 and float), usage from the CLIP tokenizer, models.list', async () => {
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'not-checked', maxRetries: 0 });
    const texts = ['a photo of a cat', 'a diagram of a dog', Array.from({ length: 100 }, (_, i) => `w${i}`).join(' ')];
    const expected = await modelTexts(texts);
    // Without encoding_format the SDK asks for base64 and decodes it: the little-endian f32 path.
    const viaBase64 = await client.embeddings.create({ model: version, input: texts });
    const viaFloat = await client.embeddings.create({ model: version, input: texts, encoding_format: 'float' });
    for (const res of [viaBase64, viaFloat]) {
      expect(res.object).toBe('list');
      expect(res.model).toBe(version);
      expect(res.data.map((d) => d.index)).toEqual([0, 1, 2]);
      res.data.forEach((d, i) => expectClose(d.embedding, expected.vectors[i]));
      // The long text is cut at the context length: usage counts what the model read.
      expect(res.usage).toEqual({ prompt_tokens: expected.tokens, total_tokens: expected.tokens });
    }
    expect(expected.tokens).toBeLessThanOrEqual(3 * server.model.info.contextLength);
    const single = await client.embeddings.create({
      model: version,
      input: 'a photo of a cat',
      dimensions: server.model.info.embedDim,
    });
    expectClose(single.data[0].embedding, expected.vectors[0]);

    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([version]);
    expect(models.data[0]).toMatchObject({
      object: 'model',
      owned_by: 'clipserve',
      dimensions: server.model.info.embedDim,
      demo: true,
    });
    expect((await client.models.retrieve(version)).id).toBe(version);

    await expect(client.embeddings.create({ model: 'text-embedding-3-small', input: 'x' })).rejects.toMatchObject({
      status: 404,
      code: 'model_not_found',
      param: 'model',
    });
    await expect(client.embeddings.create({ model: version, input: 'x', dimensions: 7 })).rejects.toMatchObject({
      status: 400,
      param: 'dimensions',
    });
    await expect(client.models.retrieve('no-such-version')).rejects.toMatchObject({ status: 404 });
  });

  test('LangChain OpenAIEmbeddings: embedDocuments and embedQuery against the base URL', async () => {
    const embeddings = new OpenAIEmbeddings({
      model: version,
      apiKey: 'not-checked',
      configuration: { baseURL: `${base}/v1` },
      maxRetries: 0,
    });
    const docs = ['a red bicycle', 'a blue car', 'a green tree'];
    const expected = await modelTexts([...docs, 'a vehicle']);
    const vectors = await embeddings.embedDocuments(docs);
    expect(vectors).toHaveLength(3);
    vectors.forEach((v, i) => expectClose(v, expected.vectors[i]));
    expectClose(await embeddings.embedQuery('a vehicle'), expected.vectors[3]);
  });

  test('images: Jina-style {"image"} items (data: URI and bare base64), mixed with texts in order; Infinity "modality": "image"', async () => {
    const [img0, img1] = images;
    const expectedImages = await modelImages(images);
    const expectedTexts = await modelTexts(['a cat', 'a dog']);
    const mixed = await http(base, '/v1/embeddings', {
      model: version,
      input: [
        { text: 'a cat' },
        { image: `data:image/png;base64,${img0.toString('base64')}` },
        'a dog',
        { image: img1.toString('base64') },
      ],
    });
    expect(mixed.status).toBe(200);
    expect(mixed.body.data.map((d: Any) => d.index)).toEqual([0, 1, 2, 3]);
    expectClose(mixed.body.data[0].embedding, expectedTexts.vectors[0]);
    expectClose(mixed.body.data[1].embedding, expectedImages[0]);
    expectClose(mixed.body.data[2].embedding, expectedTexts.vectors[1]);
    expectClose(mixed.body.data[3].embedding, expectedImages[1]);
    // Images count no prompt tokens.
    expect(mixed.body.usage.prompt_tokens).toBe(expectedTexts.tokens);

    const infinity = await http(base, '/v1/embeddings', {
      model: version,
      modality: 'image',
      encoding_format: 'base64',
      input: [`data:image/png;base64,${img1.toString('base64')}`, `data:image/png;base64,${img0.toString('base64')}`],
    });
    expect(infinity.status).toBe(200);
    const decoded = infinity.body.data.map((d: Any) => {
      const bytes = Buffer.from(d.embedding as string, 'base64');
      return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
    });
    expectClose(decoded[0], expectedImages[1], 0);
    expectClose(decoded[1], expectedImages[0], 0);
    expect(infinity.body.usage).toEqual({ prompt_tokens: 0, total_tokens: 0 });
  });

  test('a body and an image over 256 KiB are parsed and decoded in a worker thread, with the same result', async () => {
    // Noise does not compress: a ~300 KB PNG.
    const noise = Buffer.alloc(320 * 320 * 3);
    const random = seededRandom(7);
    for (let i = 0; i < noise.length; i++) noise[i] = Math.floor(random() * 256);
    const big = await sharp(noise, { raw: { width: 320, height: 320, channels: 3 } })
      .png()
      .toBuffer();
    expect((big.length * 4) / 3).toBeGreaterThan(256 * 1024);
    const res = await http(base, '/v1/embeddings', {
      model: version,
      input: [{ image: `data:image/png;base64,${big.toString('base64')}` }, 'a cat'],
    });
    expect(res.status).toBe(200);
    expectClose(res.body.data[0].embedding, (await modelImages([big]))[0]);
    expectClose(res.body.data[1].embedding, (await modelTexts(['a cat'])).vectors[0]);
  });

  test('bad input: OpenAI error bodies with 400/404/413/415 naming the field; nothing is fetched', async () => {
    const post = (body: unknown) => http(base, '/v1/embeddings', body);
    const b64 = images[0].toString('base64');
    expectError(
      await post({ model: version, input: [{ image: 'https://169.254.169.254/latest/meta-data' }] }),
      400,
      'image_url_not_supported',
      'input[0]',
    );
    expectError(
      await post({ model: version, input: ['ok', { image: 'data:text/plain;base64,aGk=' }] }),
      400,
      'invalid_image',
      'input[1]',
    );
    expectError(await post({ model: version, input: [{ image: 'not*base64!' }] }), 400, 'invalid_image', 'input[0]');
    // Valid base64 of bytes that are no image: the decoder's verdict, naming the item.
    expectError(
      await post({
        model: version,
        input: ['ok', { image: Buffer.from('definitely not an image').toString('base64') }],
      }),
      400,
      'invalid_value',
      'input[1]',
    );
    expectError(
      await post({ model: version, input: [{ image: 'A'.repeat(20_000) + '=' }] }),
      400,
      'invalid_image',
      'input[0]',
    );
    // Over 256 KiB: checked in a worker thread, with the same answer.
    expectError(
      await post({ model: version, input: ['ok', { image: 'A'.repeat(560_000) }] }),
      413,
      'image_too_large',
      'input[1]',
    );
    expectError(
      await post({ model: version, input: [{ image: 'A'.repeat(300_000) + '*' }] }),
      400,
      'invalid_image',
      'input[0]',
    );
    expectError(await post(`{"model": "", "input": ["${'x'.repeat(300_000)}"`), 400, 'invalid_json');
    expectError(await post(`{"model": "", "input": "x", "__proto__": {"polluted": 1}}`), 400, 'invalid_json');
    expectError(
      await post({ model: version, input: [{ image: b64, text: 'both' }] }),
      400,
      'invalid_value',
      'input[0]',
    );
    expectError(await post({ model: version, input: [1, 2, 3] }), 400, 'token_ids_not_supported', 'input');
    expectError(await post({ model: version, input: [[1, 2], [3]] }), 400, 'token_ids_not_supported', 'input');
    expectError(await post({ model: version, input: [] }), 400, 'invalid_value');
    expectError(await post({ model: version, input: Array(9).fill('x') }), 400, 'invalid_value');
    // Refused before validation walks the list, with the gRPC API's message.
    const many = await post({ model: version, input: Array(50_000).fill(0) });
    expectError(many, 400, 'invalid_value');
    expect(many.body.error.message).toBe('input: 50000 items exceed the limit of 8 per request; split the request');
    expectError(await post({ model: version, input: 'x'.repeat(501) }), 400, 'invalid_value');
    expectError(
      await post({ model: version, input: 'x', encoding_format: 'int8' }),
      400,
      'invalid_value',
      'encoding_format',
    );
    expectError(await post({ model: version, input: 'x', temperature: 1 }), 400, 'unknown_parameter', 'temperature');
    expectError(await post({ input: 'x' }), 400, 'missing_required_parameter', 'model');
    expectError(await post({ model: 'v999', input: 'x' }), 404, 'model_not_found', 'model');
    expectError(await post('{"model": "x", "input": '), 400, 'invalid_json');
    expectError(await post(`{"model": "${version}", "input": "${'x'.repeat(1_010_000)}"}`), 413, 'request_too_large');
    expectError(
      await http(base, '/v1/embeddings', 'input=x', { 'content-type': 'application/x-www-form-urlencoded' }),
      415,
      'unsupported_media_type',
    );
    expectError(await http(base, '/v1/chat/completions', { model: version }), 404, 'not_found');
  });

  test('similarity, rank and classify as JSON: the same CLIP heads as gRPC, checked against /v1/embeddings vectors', async () => {
    const dataUri = (b: Buffer) => `data:image/png;base64,${b.toString('base64')}`;
    const embed = async (input: unknown[]) =>
      (await http(base, '/v1/embeddings', { model: version, input })).body.data.map((d: Any) =>
        Float32Array.from(d.embedding),
      );
    const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, x, k) => s + x * b[k], 0);
    const scale = server.model.info.logitScale;
    const texts = ['red', 'green', 'blue'];
    const [img0, img1] = await embed(images.map((b) => ({ image: dataUri(b) })));
    const txt = await embed(texts);

    const sim = await http(base, '/v1/similarity', { images: images.map(dataUri), texts });
    expect(sim.status).toBe(200);
    expect(sim.body.model).toBe(version);
    [img0, img1].forEach((img, i) =>
      expectClose(
        sim.body.logits_per_image[i],
        txt.map((t: Float32Array) => scale * dot(img, t)),
        1e-4,
      ),
    );
    expectClose(
      sim.body.logits_per_text[2],
      [img0, img1].map((img) => scale * dot(img, txt[2])),
      1e-4,
    );
    sim.body.probs.forEach((row: number[]) => expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6));
    expect(sim.body.text_truncated).toEqual([false, false, false]);

    const ranked = await http(base, '/v1/rank', {
      model: version,
      query_image: images[0].toString('base64'),
      candidate_texts: texts,
      candidate_images: [dataUri(images[1])],
      top_k: 3,
    });
    expect(ranked.status).toBe(200);
    const expected = [
      ...txt.map((t: Float32Array, index: number) => ({ modality: 'text', index, score: dot(img0, t) })),
      { modality: 'image', index: 0, score: dot(img0, img1) },
    ].sort((a, b) => b.score - a.score);
    expect(ranked.body.results.map((r: Any) => [r.modality, r.index])).toEqual(
      expected.slice(0, 3).map((e) => [e.modality, e.index]),
    );
    ranked.body.results.forEach((r: Any, k: number) => expect(r.score).toBeCloseTo(expected[k].score, 5));

    // Rerank (Jina / Cohere shape): documents of both kinds, indices into `documents`, best first.
    const rr = await http(base, '/v1/rerank', {
      model: version,
      query: { image: dataUri(images[0]) },
      documents: ['red', { image: dataUri(images[1]) }, { text: 'green' }, 'blue'],
      top_n: 3,
    });
    expect(rr.status).toBe(200);
    const byDoc = [dot(img0, txt[0]), dot(img0, img1), dot(img0, txt[1]), dot(img0, txt[2])];
    const order = byDoc
      .map((score, index) => ({ score, index }))
      .sort((a, b) => b.score - a.score)
      .slice(0, 3);
    expect(rr.body.results.map((r: Any) => r.index)).toEqual(order.map((o) => o.index));
    rr.body.results.forEach((r: Any, k: number) => {
      expect(r.relevance_score).toBeCloseTo(order[k].score, 5);
      if (r.index === 1) expect(r.document).toBeUndefined();
      else expect(r.document).toEqual({ text: ['red', '', 'green', 'blue'][r.index] });
    });
    expect(
      (await http(base, '/v1/rerank', { query: 'red', documents: ['red', 'blue'], return_documents: false })).body
        .results,
    ).toEqual([
      { index: 0, relevance_score: expect.closeTo(1, 5) },
      { index: 1, relevance_score: expect.any(Number) },
    ]);
    expectError(
      await http(base, '/v1/rerank', {
        query: 'red',
        documents: ['a', { image: Buffer.from('no image').toString('base64') }],
      }),
      400,
      'invalid_value',
      'documents[1]',
    );
    expectError(
      await http(base, '/v1/rerank', { query: 'red', documents: ['a', 'x'.repeat(501)] }),
      400,
      'invalid_value',
    );

    const labels = ['cat', 'dog'];
    const cls = await http(base, '/v1/classify', {
      images: [dataUri(images[0])],
      labels,
      templates: ['a photo of a {}.'],
      top_k: 1,
    });
    expect(cls.status).toBe(200);
    const prompts = await embed(labels.map((l) => `a photo of a ${l}.`));
    const best = dot(img0, prompts[0]) >= dot(img0, prompts[1]) ? 0 : 1;
    expect(cls.body.classifications[0].labels).toEqual([expect.objectContaining({ label: labels[best], index: best })]);

    expectError(
      await http(base, '/v1/rank', {
        query_text: 'a',
        query_image: images[0].toString('base64'),
        candidate_texts: ['b'],
      }),
      400,
      'invalid_value',
      'query_image',
    );
    expectError(await http(base, '/v1/rank', { candidate_texts: ['b'] }), 400, 'invalid_value');
    expectError(
      await http(base, '/v1/classify', { images: [dataUri(images[0])], labels: ['x'], templates: ['no hole'] }),
      400,
      'invalid_value',
    );
    expectError(
      await http(base, '/v1/similarity', { images: [dataUri(images[0]), 'https://example.com/x.png'], texts: ['a'] }),
      400,
      'image_url_not_supported',
      'images[1]',
    );
    expectError(
      await http(base, '/v1/similarity', {
        images: [dataUri(images[0]), Buffer.from('no image').toString('base64')],
        texts: ['a'],
      }),
      400,
      'invalid_value',
      'images[1]',
    );
    expectError(
      await http(base, '/v1/similarity', { model: 'nope', images: [dataUri(images[0])], texts: ['a'] }),
      404,
      'model_not_found',
    );
  });

  test('the OpenAPI document describes the routes; HTTP metrics carry method, route and status', async () => {
    const doc = await http(base, '/openapi.json');
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.body.paths).sort()).toEqual([
      '/v1/classify',
      '/v1/embeddings',
      '/v1/models',
      '/v1/models/{model}',
      '/v1/rank',
      '/v1/rerank',
      '/v1/similarity',
    ]);
    const request = doc.body.paths['/v1/embeddings'].post.requestBody.content['application/json'].schema;
    expect(request.required).toEqual(['input', 'model']);
    expect(Object.keys(doc.body.paths['/v1/embeddings'].post.responses)).toEqual(
      expect.arrayContaining(['200', '400', '401', '413', '429', '503']),
    );
    expect(doc.body.paths['/v1/embeddings'].post.responses['429'].content['application/json'].schema).toEqual({
      $ref: '#/components/schemas/Error',
    });
    expect(doc.body.components.schemas.Error.properties.error.required).toEqual(['message', 'type', 'param', 'code']);

    const scrape = await server.metrics.registry.metrics();
    expect(scrape).toMatch(/http_requests_total\{method="POST",route="\/v1\/embeddings",status_code="200"\} [1-9]/);
    expect(scrape).toMatch(/http_requests_total\{method="POST",route="\/v1\/embeddings",status_code="400"\} [1-9]/);
    expect(scrape).toMatch(/http_requests_total\{method="POST",route="unmatched",status_code="404"\} [1-9]/);
    expect(scrape).toMatch(
      /http_request_duration_seconds_count\{method="GET",route="\/v1\/models",status_code="200"\} [1-9]/,
    );
    // The items themselves are counted where gRPC's are, whichever protocol brought them.
    expect(scrape).toMatch(/clipserve_items_embedded_total\{modality="image"\} [1-9]/);
  });
});

describe('HTTP API: keys, start-up, overload', () => {
  test('the gRPC API keys: 401 without or with an unknown key, 403 without the embed scope; the OpenAPI document stays open', async () => {
    const server = await startTestServer({
      httpPort: 'auto',
      apiKeys: `${EMBED_KEY} embed embedder; ${FINETUNE_KEY} finetune tuner`,
    });
    const base = `http://127.0.0.1:${server.httpPort}`;
    const body = { model: '', input: 'a cat' };
    try {
      expectError(await http(base, '/v1/embeddings', body), 401, 'invalid_api_key');
      expectError(await http(base, '/v1/models'), 401, 'invalid_api_key');
      expectError(
        await http(base, '/v1/embeddings', body, { authorization: 'Bearer wrong-key-0123456789abc' }),
        401,
        'invalid_api_key',
      );
      expectError(
        await http(base, '/v1/embeddings', body, { authorization: `Basic ${EMBED_KEY}` }),
        401,
        'invalid_api_key',
      );
      const denied = await http(base, '/v1/embeddings', body, { authorization: `Bearer ${FINETUNE_KEY}` });
      expectError(denied, 403, 'insufficient_permissions');
      expect(denied.body.error.message).toMatch(/"tuner" lacks the "embed" scope/);
      // A refused caller's body is never parsed: even garbage gets the 401.
      expectError(await http(base, '/v1/embeddings', '{not json'), 401, 'invalid_api_key');

      expect((await http(base, '/v1/embeddings', body, { authorization: `Bearer ${EMBED_KEY}` })).status).toBe(200);
      const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: EMBED_KEY, maxRetries: 0 });
      expect((await client.embeddings.create({ model: '', input: ['x', 'y'] })).data).toHaveLength(2);
      await expect(
        new OpenAI({ baseURL: `${base}/v1`, apiKey: FINETUNE_KEY, maxRetries: 0 }).models.list(),
      ).rejects.toMatchObject({ status: 403 });
      expect((await http(base, '/openapi.json')).status).toBe(200);

      // Header bytes HTTP allows but gRPC metadata refuses (latin-1), and oversized ids: answered, never a crash.
      const raw = (headers: Record<string, string>) =>
        new Promise<{ status: number | string; id: unknown }>((resolve) => {
          const req = httpRequest({ host: '127.0.0.1', port: server.httpPort, path: '/v1/models', headers }, (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, id: res.headers['x-request-id'] });
          });
          req.on('error', (err) => resolve({ status: err.message, id: undefined }));
          req.end();
        });
      const auth = { authorization: `Bearer ${EMBED_KEY}` };
      expect(await raw({ ...auth, 'x-request-id': 'caf\xe9' })).toEqual({
        status: 200,
        id: expect.not.stringContaining('caf'),
      });
      expect(await raw({ ...auth, 'x-request-id': 'x'.repeat(5000) })).toEqual({
        status: 200,
        id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      });
      expect(await raw({ ...auth, 'x-request-id': 'trace-42' })).toEqual({ status: 200, id: 'trace-42' });
      expect((await raw({ authorization: 'Bearer caf\xe9-0123456789abcdef' })).status).toBe(401);
      expect((await http(base, '/v1/models', undefined, auth)).status).toBe(200);
    } finally {
      await server.shutdown(1);
    }
  });

  /** A server whose text inference waits while `hold()` is in force (to fill queues and hold calls in flight). */
  async function heldServer(extra: Record<string, unknown> = {}) {
    let release!: () => void;
    const loading = new Promise<void>((r) => (release = r));
    let held: Promise<void> | undefined;
    let unhold = () => undefined as void;
    const server = await startTestServer({
      httpPort: 'auto',
      waitUntilReady: false,
      ...extra,
      loadModel: async (config, logger) => {
        await loading;
        const model = await loadServedModel(config, logger);
        const encodeText = model.encodeText.bind(model);
        model.encodeText = async (ids, n) => {
          await held;
          return encodeText(ids, n);
        };
        return model;
      },
    });
    return {
      server,
      base: `http://127.0.0.1:${server.httpPort}`,
      release,
      hold: () => {
        held = new Promise<void>((r) => (unhold = r));
      },
      unhold: () => unhold(),
    };
  }
  const until = async (cond: () => boolean) => {
    while (!cond()) await new Promise((r) => setTimeout(r, 5));
  };

  test('503 with Retry-After while the model loads; 429 with Retry-After when the queue is full', async () => {
    const { server, base, release, hold, unhold } = await heldServer({
      maxBatchSize: 1,
      queueBound: 4,
      maxItemsPerRequest: 4,
    });
    try {
      const early = await http(base, '/v1/embeddings', { model: '', input: 'x' });
      expectError(early, 503, 'service_unavailable');
      expect(early.headers.get('retry-after')).toBe('1');
      expect(early.body.error.message).toMatch(/model is still loading/);

      release();
      await server.ready;
      hold();
      // One item runs (held), four wait: the queue is full.
      const running = http(base, '/v1/embeddings', { model: '', input: 'first' });
      await until(() => server.stats().batchers?.text.inFlight === 1);
      const queued = http(base, '/v1/embeddings', { model: '', input: ['a', 'b', 'c', 'd'] });
      await until(() => server.stats().batchers?.text.depth === 4);
      const refused = await http(base, '/v1/embeddings', { model: '', input: 'one too many' });
      expectError(refused, 429, 'rate_limit_exceeded');
      expect(refused.headers.get('retry-after')).toBe('1');
      unhold();
      expect((await running).status).toBe(200);
      expect((await queued).body.data).toHaveLength(4);
    } finally {
      release();
      unhold();
      await server.shutdown(1);
    }
  });

  test('drain: a request in flight finishes, new ones get 503, then the port closes', async () => {
    const { server, base, release, hold, unhold } = await heldServer();
    release();
    await server.ready;
    hold();
    const inFlight = http(base, '/v1/embeddings', { model: '', input: 'in flight' });
    await until(() => server.stats().inFlightCalls === 1);
    const stopped = server.shutdown(30);
    const refused = await http(base, '/v1/embeddings', { model: '', input: 'too late' });
    expectError(refused, 503, 'service_unavailable');
    expect(refused.body.error.message).toBe('server is shutting down');
    unhold();
    expect((await inFlight).status).toBe(200);
    await stopped;
    await expect(fetch(`${base}/v1/models`)).rejects.toThrow();
  });
});
