/**
 * @clipserve/sdk as published: `npm pack`, installed from the tarball into an empty project, used
 * through `import` and `require` against a real server, and its shipped declarations type-checked
 * with tsc. Also runs examples/rag (index, retrieve by text and image, re-rank) against the server.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { execFile } from 'node:child_process';
import sharp from 'sharp';
import { ensureSdkBuilt, REPO_ROOT, SDK_DIR, startClipServer, tempDir, type ClipServerProcess } from './sdk-helpers';

const run = promisify(execFile);
const SDK_VERSION = (JSON.parse(fs.readFileSync(path.join(SDK_DIR, 'package.json'), 'utf8')) as { version: string }).version;

function installedVersion(pkg: string): string {
  return (JSON.parse(fs.readFileSync(path.join(SDK_DIR, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
}

let server: ClipServerProcess;
let work: string;

beforeAll(async () => {
  ensureSdkBuilt();
  work = tempDir('sdk-package');
  server = await startClipServer();
});

afterAll(async () => {
  await server?.stop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  let tarball: string;
  let project: string;

  beforeAll(async () => {
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: SDK_DIR });
    tarball = path.join(work, (JSON.parse(stdout) as { filename: string }[])[0].filename);
    project = path.join(work, 'consumer');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'sdk-consumer', private: true, type: 'module' }));
    // Dependencies come from the npm cache that `npm ci --prefix sdk` filled (same versions), else the registry.
    await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--no-package-lock', tarball,
      `@langchain/core@${installedVersion('@langchain/core')}`, `@types/node@${installedVersion('@types/node')}`], { cwd: project, maxBuffer: 1 << 24 });
  }, 150_000);

  test('ships the builds, declarations, proto, README and CHANGELOG, and no sources', () => {
    const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
    for (const f of ['package.json', 'README.md', 'CHANGELOG.md', 'dist/esm/index.js', 'dist/esm/index.d.ts', 'dist/cjs/index.js', 'dist/cjs/index.d.ts',
      'dist/cjs/package.json', 'dist/esm/langchain.js', 'dist/cjs/langchain.d.ts', 'proto/clipserve/v1/embedding.proto', 'proto/clipserve/v1/common.proto',
      'proto/grpc/health/v1/health.proto']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.startsWith('src/') || f.startsWith('scripts/') || f.endsWith('.map') || f.includes('node_modules'))).toEqual([]);
    const pkg = JSON.parse(fs.readFileSync(path.join(project, 'node_modules', '@clipserve', 'sdk', 'package.json'), 'utf8'));
    expect(pkg.version).toBe(SDK_VERSION);
    expect(pkg.peerDependenciesMeta['@langchain/core'].optional).toBe(true);
  });

  test('works from import (ESM) and require (CommonJS) against a running server', async () => {
    const body = (load: string): string => `${load}
const client = new ClipClient({ address: process.env.CLIPSERVE_ADDRESS });
const info = await client.modelInfo();
const [v] = await client.embedTexts(['packed tarball']);
const lc = await new ClipServeEmbeddings({ client }).embedQuery('packed tarball');
let code;
try { await client.embedImages([Buffer.from('nope')]); } catch (err) { code = err instanceof ClipServeError ? err.codeName : String(err); }
client.close();
console.log(JSON.stringify({ dim: info.embedDim, v: Array.from(v), lc, code }));
`;
    fs.writeFileSync(path.join(project, 'esm.mjs'), body(`import { ClipClient, ClipServeError } from '@clipserve/sdk';
import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';`));
    fs.writeFileSync(path.join(project, 'cjs.cjs'), `(async () => {${body(`const { ClipClient, ClipServeError } = require('@clipserve/sdk');
const { ClipServeEmbeddings } = require('@clipserve/sdk/langchain');
require('fs').accessSync(require.resolve('@clipserve/sdk/proto/clipserve/v1/embedding.proto'));`)}})().catch((e) => { console.error(e); process.exit(1); });`);
    const env = { ...process.env, CLIPSERVE_ADDRESS: server.address };
    const [esm, cjs] = await Promise.all(['esm.mjs', 'cjs.cjs'].map(async (f) => JSON.parse((await run(process.execPath, [f], { cwd: project, env })).stdout)));
    expect(esm.v).toHaveLength(esm.dim);
    expect(cjs.v).toEqual(esm.v);
    expect(esm.lc).toEqual(esm.v);
    expect(esm.code).toBe('INVALID_ARGUMENT');
    expect(cjs.code).toBe('INVALID_ARGUMENT');
  });

  test('the shipped declarations type-check a usage file (ESM and CommonJS resolution)', async () => {
    const usage = `
import { ClipClient, ClipServeError, Status, type StreamResult, type RankedCandidate, type ModelInfo } from '@clipserve/sdk';
import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';
import type { Embeddings } from '@langchain/core/embeddings';

export async function demo(signal: AbortSignal): Promise<number> {
  const client = new ClipClient({ address: 'dns:///clipserve-headless:50051', apiKey: 'k', tls: { ca: 'pem' }, keepalive: { timeMs: 20_000 }, maxReceiveMessageBytes: 1 << 26 });
  const vectors: Float32Array[] = await client.embedTexts(['a'], { timeoutMs: 1000, signal, onProgress: ({ completed, total }) => void (completed / total) });
  const mixed: Float32Array[] = await client.embed(['t', { image: new Uint8Array(4) }, { image: '/tmp/x.png' }], { deadline: new Date() });
  for await (const r of client.embedStream([{ id: 'x', text: 't' }], { maxInFlight: 8 })) {
    const checked: StreamResult = r;
    if (checked.error) { const code: number = checked.error.code; void code; } else { const e: Float32Array = checked.embedding; void e; }
  }
  const ranked: RankedCandidate[] = await client.rank({ text: 'q' }, { images: [Buffer.alloc(1)] }, { topK: 3 });
  const info: ModelInfo = await client.modelInfo();
  const labels = await client.classify(['/tmp/a.png'], ['cat'], { templates: ['a {}'] });
  const s = await client.similarity({ images: [], texts: ['x'] });
  const lc: Embeddings = new ClipServeEmbeddings({ client });
  const q: number[] = await lc.embedQuery('x');
  try { await client.health(); } catch (err) { if (err instanceof ClipServeError && err.code === Status.UNAVAILABLE) return err.itemIndex ?? -1; }
  // @ts-expect-error texts must be strings
  await client.embedTexts([1]);
  // @ts-expect-error an item is a string, { text } or { image }
  await client.embed([{ audio: 'x' }]);
  // @ts-expect-error the address is required
  new ClipClient({});
  client.close();
  return vectors.length + mixed.length + ranked.length + info.embedDim + labels.length + s.probs.length + q.length;
}
`;
    fs.writeFileSync(path.join(project, 'usage.mts'), usage);
    fs.writeFileSync(path.join(project, 'usage.cts'), usage.replace("import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';",
      "import langchain = require('@clipserve/sdk/langchain');\nconst { ClipServeEmbeddings } = langchain;").replace(/^import \{ ClipClient.*$/m,
      "import sdk = require('@clipserve/sdk');\nimport type { StreamResult, RankedCandidate, ModelInfo } from '@clipserve/sdk';\nconst { ClipClient, ClipServeError, Status } = sdk;"));
    fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, types: ['node'], skipLibCheck: false },
      files: ['usage.mts', 'usage.cts'],
    }));
    const tsc = path.join(SDK_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
    // skipLibCheck is off, so the shipped .d.ts files are themselves checked, not only their use.
    await run(process.execPath, [tsc, '-p', project], { cwd: project }).catch((err: { stdout: string }) => {
      throw new Error(`tsc failed:\n${err.stdout}`);
    });
  }, 60_000);
});

describe('examples/rag', () => {
  test('indexes a folder of images and captions, retrieves by text and by image, re-ranks with rank', async () => {
    const exampleDir = path.join(REPO_ROOT, 'examples', 'rag');
    // What `npm install` does there for the file:../../sdk dependency: a link to the package.
    const link = path.join(exampleDir, 'node_modules', '@clipserve', 'sdk');
    if (!fs.existsSync(link)) {
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(link), SDK_DIR), link, 'dir');
    }
    const photos = path.join(work, 'photos');
    fs.mkdirSync(photos);
    const colors = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [240, 240, 240], [10, 10, 10]];
    await Promise.all(colors.map(async ([r, g, b], i) => {
      const img = sharp({ create: { width: 48 + 8 * i, height: 40, channels: 3, background: { r, g, b } } });
      await (i % 2 ? img.jpeg() : img.png()).toFile(path.join(photos, `photo${i}.${i % 2 ? 'jpg' : 'png'}`));
      if (i !== 5) fs.writeFileSync(path.join(photos, `photo${i}.txt`), `caption number ${i}: a plain square of one colour\n`);
    }));
    fs.writeFileSync(path.join(photos, 'notes.md'), 'not an image, ignored');
    const { stdout } = await run(process.execPath, [path.join(exampleDir, 'rag.mjs'), '--server', server.address, '--dir', photos,
      '--text', 'caption number 3: a plain square of one colour', '--image', path.join(photos, 'photo2.png'), '--k', '3', '--candidates', '4'], { cwd: work });
    const out = JSON.parse(stdout) as { indexed: number; queries: { kind: string; results: { name: string; caption: string; retrievalScore: number; rerankScore: number; matchedBy: string }[] }[] };
    expect(out.indexed).toBe(6);
    const [byText, byImage] = out.queries;
    expect(byText.kind).toBe('text');
    expect(byImage.kind).toBe('image');
    for (const q of out.queries) {
      expect(q.results).toHaveLength(3);
      for (let i = 1; i < q.results.length; i++) expect(q.results[i - 1].rerankScore).toBeGreaterThanOrEqual(q.results[i].rerankScore);
    }
    // the exact caption and the identical image are found and ranked first, with cosine 1
    expect(byText.results[0]).toMatchObject({ name: 'photo3.jpg', matchedBy: 'text' });
    expect(byText.results[0].rerankScore).toBeCloseTo(1, 4);
    expect(byImage.results[0]).toMatchObject({ name: 'photo2.png', matchedBy: 'image' });
    expect(byImage.results[0].retrievalScore).toBeCloseTo(1, 4);
  });
});
