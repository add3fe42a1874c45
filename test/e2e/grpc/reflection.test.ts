/**
 * Every RPC through `buf curl --protocol grpc --http2-prior-knowledge`, which knows nothing of our
 * proto files: it learns the schema from server reflection (v1 and v1alpha), as grpcurl, Postman
 * and other generic tools do.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { RunningServer } from '../../../server/src/serve/server';
import { PACKAGE_ROOT } from '../../../server/src/util/paths';
import { startTestServer } from '../../helpers/server';

const run = promisify(execFile);
const BUF = path.join(PACKAGE_ROOT, 'node_modules', '.bin', 'buf');
type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Splits buf curl's output: one pretty-printed JSON document per response message. */
function parseJsonDocs(text: string): Any[] {
  const docs: Any[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === '{') {
      if (depth++ === 0) start = i;
    } else if (ch === '}' && --depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)));
  }
  return docs;
}

describe('server reflection: every RPC through buf curl with no proto files', () => {
  let server: RunningServer;
  let url: string;
  let pngB64: string;

  async function curl(method: string, data: unknown | string, extra: string[] = []): Promise<Any[]> {
    const body = typeof data === 'string' ? data : JSON.stringify(data);
    const { stdout } = await run(
      BUF,
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...extra, '-d', body, `${url}/${method}`],
      { timeout: 60_000 },
    );
    return parseJsonDocs(stdout);
  }

  beforeAll(async () => {
    server = await startTestServer();
    url = `http://127.0.0.1:${server.port}`;
    pngB64 = (
      await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 250, g: 0, b: 0 } } })
        .png()
        .toBuffer()
    ).toString('base64');
  });

  afterAll(async () => {
    await server?.shutdown(1);
  });

  test('reflection lists the embedding and health services', async () => {
    const { stdout } = await run(BUF, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-methods', url]);
    const methods = stdout.trim().split('\n').sort();
    expect(methods).toEqual(
      expect.arrayContaining(
        ['Classify', 'EmbedImage', 'EmbedStream', 'EmbedText', 'GetModelInfo', 'Rank', 'Similarity']
          .map((m) => `clipserve.v1.EmbeddingService/${m}`)
          .concat(['grpc.health.v1.Health/Check', 'grpc.health.v1.Health/Watch']),
      ),
    );
  });

  test.each(['grpc-v1', 'grpc-v1alpha'])('GetModelInfo over reflection %s', async (protocol) => {
    const [info] = await curl('clipserve.v1.EmbeddingService/GetModelInfo', {}, ['--reflect-protocol', protocol]);
    expect(info).toMatchObject({
      name: server.model.info.name,
      embedDim: 32,
      demo: true,
      limits: { maxItemsPerRequest: 256 },
    });
  });

  test('EmbedText and EmbedImage', async () => {
    const [text] = await curl('clipserve.v1.EmbeddingService/EmbedText', { texts: ['a red square'] });
    expect(text.dim).toBe(32);
    expect(text.embeddings[0].values).toHaveLength(32);
    const [image] = await curl('clipserve.v1.EmbeddingService/EmbedImage', {
      images: [pngB64],
      format: 'EMBEDDING_FORMAT_F32LE_BYTES',
    });
    expect(Buffer.from(image.embeddings[0].valuesF32le, 'base64')).toHaveLength(128);
  });

  test('EmbedStream (bidirectional): one response per item, ids kept, bad items answered in-stream', async () => {
    const docs = [
      { id: 'a', text: 'hello' },
      { id: 'b', image: pngB64 },
      { id: 'c', image: Buffer.from('junk').toString('base64') },
    ];
    const out = await curl('clipserve.v1.EmbeddingService/EmbedStream', docs.map((d) => JSON.stringify(d)).join('\n'));
    expect(out.map((r) => r.id).sort()).toEqual(['a', 'b', 'c']);
    const byId = Object.fromEntries(out.map((r) => [r.id, r]));
    expect(byId.a.embedding.values).toHaveLength(32);
    expect(byId.b.modality).toBe('MODALITY_IMAGE');
    expect(byId.c.error.code).toBe(3);
  });

  test('Similarity, Rank and Classify', async () => {
    const [sim] = await curl('clipserve.v1.EmbeddingService/Similarity', { images: [pngB64], texts: ['red', 'blue'] });
    expect(sim.logitsPerImage[0].values).toHaveLength(2);
    expect(sim.probs[0].values.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 5);
    const [rank] = await curl('clipserve.v1.EmbeddingService/Rank', {
      queryText: 'red',
      candidateTexts: ['red', 'blue'],
      candidateImages: [pngB64],
    });
    expect(rank.results).toHaveLength(3);
    expect(rank.results[0]).toMatchObject({ modality: 'MODALITY_TEXT' });
    const [cls] = await curl('clipserve.v1.EmbeddingService/Classify', {
      images: [pngB64],
      labels: ['red', 'blue'],
      topK: 1,
    });
    expect(cls.classifications[0].labels).toHaveLength(1);
  });

  test('grpc.health.v1.Health/Check for the server and the service', async () => {
    expect(await curl('grpc.health.v1.Health/Check', { service: '' })).toEqual([{ status: 'SERVING' }]);
    expect(await curl('grpc.health.v1.Health/Check', { service: 'clipserve.v1.EmbeddingService' })).toEqual([
      { status: 'SERVING' },
    ]);
  });

  test('an error status reaches buf curl with its code and message', async () => {
    const failure = await curl('clipserve.v1.EmbeddingService/EmbedText', { texts: [] }).then(
      () => undefined,
      (err: { stderr: string }) => err,
    );
    expect(failure).toBeDefined();
    expect(parseJsonDocs(failure!.stderr)).toEqual([
      { code: 'invalid_argument', message: 'texts: at least one item is required' },
    ]);
  });
});
