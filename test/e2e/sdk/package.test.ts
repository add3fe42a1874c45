/**
 * @clipserve/sdk as published: `npm pack` in a copy of the repository's tracked files (no dist/, as
 * in a fresh clone: `prepare` builds it), installed from the tarball into an empty project, used
 * through `import` and `require` against a real server, and its shipped declarations type-checked
 * with tsc. The LangChain adapter against @langchain/core 0.3 and 1.x, and the README's LangChain
 * snippet as written. Also runs examples/rag (index, retrieve by text and image, re-rank).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { execFile } from 'node:child_process';
import sharp from 'sharp';
import {
  ensureSdkBuilt,
  REPO_ROOT,
  SDK_DIR,
  startClipServer,
  tempDir,
  type ClipServerProcess,
} from '../../helpers/sdk';

const run = promisify(execFile);
const SDK_VERSION = (JSON.parse(fs.readFileSync(path.join(SDK_DIR, 'package.json'), 'utf8')) as { version: string })
  .version;

/** Where node finds `pkg` from sdk/ (its own node_modules or the workspace root's). */
function installedDir(pkg: string): string {
  return path.dirname(require.resolve(`${pkg}/package.json`, { paths: [SDK_DIR] }));
}

function installedVersion(pkg: string): string {
  return (JSON.parse(fs.readFileSync(path.join(installedDir(pkg), 'package.json'), 'utf8')) as { version: string })
    .version;
}

/** The repository's tracked files under `dirs`, copied to `dest` (what a fresh clone holds). */
function copyTracked(dest: string, dirs: string[]): void {
  const files = execFileSync('git', ['ls-files', '-z', ...dirs], { cwd: REPO_ROOT, encoding: 'utf8' })
    .split('\0')
    .filter(Boolean);
  for (const f of files) {
    if (!fs.existsSync(path.join(REPO_ROOT, f))) continue; // deleted in the working tree
    fs.mkdirSync(path.dirname(path.join(dest, f)), { recursive: true });
    fs.copyFileSync(path.join(REPO_ROOT, f), path.join(dest, f));
  }
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
    // A publisher's checkout: tracked files only, installed dependencies (the workspace's, linked).
    const clone = path.join(work, 'clone');
    copyTracked(clone, ['sdk', 'proto']);
    expect(fs.existsSync(path.join(clone, 'sdk', 'dist'))).toBe(false);
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(clone, 'node_modules'), 'dir');
    if (fs.existsSync(path.join(SDK_DIR, 'node_modules')))
      fs.symlinkSync(path.join(SDK_DIR, 'node_modules'), path.join(clone, 'sdk', 'node_modules'), 'dir');
    // `prepare` (the build) prints to stdout too: the tarball is the one file pack writes there.
    await run('npm', ['pack', '--pack-destination', work], { cwd: path.join(clone, 'sdk'), maxBuffer: 1 << 24 });
    const packed = fs.readdirSync(work).filter((f) => f.endsWith('.tgz'));
    expect(packed).toEqual([`clipserve-sdk-${SDK_VERSION}.tgz`]);
    tarball = path.join(work, packed[0]);
    project = path.join(work, 'consumer');
    fs.mkdirSync(project);
    fs.writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({ name: 'sdk-consumer', private: true, type: 'module' }),
    );
    // Dependencies come from the npm cache that the root `npm ci` filled (same versions), else the registry.
    await run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--no-package-lock',
        tarball,
        `@langchain/core@${installedVersion('@langchain/core')}`,
        `@types/node@${installedVersion('@types/node')}`,
      ],
      { cwd: project, maxBuffer: 1 << 24 },
    );
  }, 150_000);

  test('ships the builds, declarations, proto, README and CHANGELOG, and no sources', () => {
    const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));
    for (const f of [
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'dist/esm/index.js',
      'dist/esm/index.d.ts',
      'dist/cjs/index.js',
      'dist/cjs/index.d.ts',
      'dist/cjs/package.json',
      'dist/esm/langchain.js',
      'dist/cjs/langchain.d.ts',
      'proto/clipserve/v1/embedding.proto',
      'proto/clipserve/v1/common.proto',
      'proto/grpc/health/v1/health.proto',
    ]) {
      expect(files).toContain(f);
    }
    expect(
      files.filter(
        (f) => f.startsWith('src/') || f.startsWith('scripts/') || f.endsWith('.map') || f.includes('node_modules'),
      ),
    ).toEqual([]);
    const pkg = JSON.parse(
      fs.readFileSync(path.join(project, 'node_modules', '@clipserve', 'sdk', 'package.json'), 'utf8'),
    );
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
    fs.writeFileSync(
      path.join(project, 'esm.mjs'),
      body(`import { ClipClient, ClipServeError } from '@clipserve/sdk';
import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';`),
    );
    fs.writeFileSync(
      path.join(project, 'cjs.cjs'),
      `(async () => {${body(`const { ClipClient, ClipServeError } = require('@clipserve/sdk');
const { ClipServeEmbeddings } = require('@clipserve/sdk/langchain');
require('fs').accessSync(require.resolve('@clipserve/sdk/proto/clipserve/v1/embedding.proto'));`)}})().catch((e) => { console.error(e); process.exit(1); });`,
    );
    const env = { ...process.env, CLIPSERVE_ADDRESS: server.address };
    const [esm, cjs] = await Promise.all(
      ['esm.mjs', 'cjs.cjs'].map(async (f) =>
        JSON.parse((await run(process.execPath, [f], { cwd: project, env })).stdout),
      ),
    );
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
    fs.writeFileSync(
      path.join(project, 'usage.cts'),
      usage
        .replace(
          "import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';",
          "import langchain = require('@clipserve/sdk/langchain');\nconst { ClipServeEmbeddings } = langchain;",
        )
        .replace(
          /^import \{ ClipClient.*$/m,
          "import sdk = require('@clipserve/sdk');\nimport type { StreamResult, RankedCandidate, ModelInfo } from '@clipserve/sdk';\nconst { ClipClient, ClipServeError, Status } = sdk;",
        ),
    );
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          types: ['node'],
          skipLibCheck: false,
        },
        files: ['usage.mts', 'usage.cts'],
      }),
    );
    const tsc = require.resolve('typescript/bin/tsc', { paths: [SDK_DIR] });
    // skipLibCheck is off, so the shipped .d.ts files are themselves checked, not only their use.
    await run(process.execPath, [tsc, '-p', project], { cwd: project }).catch((err: { stdout: string }) => {
      throw new Error(`tsc failed:\n${err.stdout}`);
    });
  }, 60_000);
});

describe('examples/rag', () => {
  test('indexes a folder of images and captions, retrieves by text and by image, re-ranks with rank', async () => {
    const exampleDir = path.join(REPO_ROOT, 'examples', 'rag');
    // The example is a workspace of the repository: the root `npm ci` linked @clipserve/sdk for it.
    expect(fs.realpathSync(path.dirname(require.resolve('@clipserve/sdk/package.json', { paths: [exampleDir] })))).toBe(
      fs.realpathSync(SDK_DIR),
    );
    const photos = path.join(work, 'photos');
    fs.mkdirSync(photos);
    const colors = [
      [200, 30, 30],
      [30, 200, 30],
      [30, 30, 200],
      [220, 220, 40],
      [240, 240, 240],
      [10, 10, 10],
    ];
    await Promise.all(
      colors.map(async ([r, g, b], i) => {
        const img = sharp({ create: { width: 48 + 8 * i, height: 40, channels: 3, background: { r, g, b } } });
        await (i % 2 ? img.jpeg() : img.png()).toFile(path.join(photos, `photo${i}.${i % 2 ? 'jpg' : 'png'}`));
        if (i !== 5)
          fs.writeFileSync(path.join(photos, `photo${i}.txt`), `caption number ${i}: a plain square of one colour\n`);
      }),
    );
    fs.writeFileSync(path.join(photos, 'notes.md'), 'not an image, ignored');
    const { stdout } = await run(
      process.execPath,
      [
        path.join(exampleDir, 'rag.mjs'),
        '--server',
        server.address,
        '--dir',
        photos,
        '--text',
        'caption number 3: a plain square of one colour',
        '--image',
        path.join(photos, 'photo2.png'),
        '--k',
        '3',
        '--candidates',
        '4',
      ],
      { cwd: work },
    );
    const out = JSON.parse(stdout) as {
      indexed: number;
      queries: {
        kind: string;
        results: { name: string; caption: string; retrievalScore: number; rerankScore: number; matchedBy: string }[];
      }[];
    };
    expect(out.indexed).toBe(6);
    const [byText, byImage] = out.queries;
    expect(byText.kind).toBe('text');
    expect(byImage.kind).toBe('image');
    for (const q of out.queries) {
      expect(q.results).toHaveLength(3);
      for (let i = 1; i < q.results.length; i++)
        expect(q.results[i - 1].rerankScore).toBeGreaterThanOrEqual(q.results[i].rerankScore);
    }
    // the exact caption and the identical image are found and ranked first, with cosine 1
    expect(byText.results[0]).toMatchObject({ name: 'photo3.jpg', matchedBy: 'text' });
    expect(byText.results[0].rerankScore).toBeCloseTo(1, 4);
    expect(byImage.results[0]).toMatchObject({ name: 'photo2.png', matchedBy: 'image' });
    expect(byImage.results[0].retrievalScore).toBeCloseTo(1, 4);
  });
});

describe('LangChain', () => {
  /**
   * A project inside the repository (so anything it lacks resolves from the workspace root) whose
   * node_modules holds the chosen @langchain/core and the SDK; node runs with --preserve-symlinks
   * so the SDK's `@langchain/core` import resolves to that copy.
   */
  function project(name: string, links: Record<string, string>, base = REPO_ROOT): string {
    const dir = path.join(base, '.cache', 'langchain-tests', name);
    fs.rmSync(dir, { recursive: true, force: true });
    for (const [pkg, target] of Object.entries(links)) {
      const at = path.join(dir, 'node_modules', pkg);
      fs.mkdirSync(path.dirname(at), { recursive: true });
      fs.symlinkSync(target, at, 'dir');
    }
    fs.writeFileSync(
      path.join(dir, 'package.json'),
      JSON.stringify({ name: `langchain-${name}`, private: true, type: 'module' }),
    );
    return dir;
  }
  const node = (dir: string, file: string) =>
    run(process.execPath, ['--preserve-symlinks', '--preserve-symlinks-main', file], {
      cwd: dir,
      env: { ...process.env, CLIPSERVE_ADDRESS: server.address },
    });

  /** The workspace package that holds langchain 0.3 and @langchain/core 0.3 (the root holds 1.x). */
  const LANGCHAIN_03_DIR = path.join(REPO_ROOT, 'examples', 'langchain-0.3');

  afterAll(() => {
    for (const base of [REPO_ROOT, LANGCHAIN_03_DIR])
      fs.rmSync(path.join(base, '.cache', 'langchain-tests'), { recursive: true, force: true });
  });

  test.each([
    ['0.3', '@langchain/core-0.3'],
    ['1.x', '@langchain/core'],
  ])(
    'the adapter is a working Embeddings of @langchain/core %s',
    async (line, installed) => {
      const core = installedDir(installed);
      const dir = project(`core-${line}`, { '@langchain/core': core, '@clipserve/sdk': SDK_DIR });
      fs.writeFileSync(
        path.join(dir, 'adapter.mjs'),
        `
import { createRequire } from 'node:module';
import { Embeddings } from '@langchain/core/embeddings';
import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';
import { ClipClient } from '@clipserve/sdk';
const client = new ClipClient({ address: process.env.CLIPSERVE_ADDRESS });
const e = new ClipServeEmbeddings({ client });
const docs = await e.embedDocuments(['a red bicycle', 'a bowl of soup']);
const q = await e.embedQuery('a red bicycle');
const [direct] = await client.embedTexts(['a red bicycle']);
client.close();
const version = createRequire(import.meta.url)('@langchain/core/package.json').version;
console.log(JSON.stringify({ version, isEmbeddings: e instanceof Embeddings, n: docs.length, same: JSON.stringify(q) === JSON.stringify(docs[0]), direct: JSON.stringify(Array.from(direct)) === JSON.stringify(q) }));
`,
      );
      const out = JSON.parse((await node(dir, 'adapter.mjs')).stdout);
      expect(out.version).toBe(installedVersion(installed));
      expect(out.version.startsWith(line === '0.3' ? '0.3.' : '1.')).toBe(true);
      expect(out).toMatchObject({ isEmbeddings: true, n: 2, same: true, direct: true });
    },
    60_000,
  );

  /**
   * The README snippet as written (langchain 1.x: MemoryVectorStore from @langchain/classic), and with the one
   * change the README gives for langchain 0.3, run from the examples/langchain-0.3 workspace, where the root
   * `npm ci` installed langchain 0.3 and its peer @langchain/core 0.3 (nested: the root holds core 1.x). The
   * SDK is linked into each project, so with --preserve-symlinks it loads that project's @langchain/core.
   */
  test.each([
    ['1.x', '@langchain/classic'],
    ['0.3', 'langchain'],
  ])(
    'the README snippet runs as documented with langchain %s (MemoryVectorStore from %s)',
    async (line, memoryPkg) => {
      const readme = fs.readFileSync(path.join(SDK_DIR, 'README.md'), 'utf8');
      const section = readme.slice(readme.indexOf('## LangChain.js'));
      const snippet = /```js\n([\s\S]*?)```/.exec(section)?.[1];
      const asWritten = "from '@langchain/classic/vectorstores/memory'";
      expect(snippet).toContain(asWritten);
      // The README's instruction for 0.3, checked so that the test and the text cannot drift apart.
      expect(section.slice(0, section.indexOf('```js')).replace(/\s+/g, ' ')).toContain(
        'import `MemoryVectorStore` from `langchain/vectorstores/memory` instead',
      );
      const dir =
        line === '1.x'
          ? project('snippet-1.x', {
              '@langchain/core': installedDir('@langchain/core'),
              '@langchain/classic': installedDir('@langchain/classic'),
              '@clipserve/sdk': SDK_DIR,
            })
          : project('snippet-0.3', { '@clipserve/sdk': SDK_DIR }, LANGCHAIN_03_DIR);
      fs.writeFileSync(
        path.join(dir, 'snippet.mjs'),
        snippet!.replace(asWritten, `from '${memoryPkg}/vectorstores/memory'`),
      );
      // Which copies the snippet ran with: one @langchain/core for the store, the embeddings and the project.
      fs.writeFileSync(
        path.join(dir, 'versions.mjs'),
        `
import { createRequire } from 'node:module';
import { Embeddings } from '@langchain/core/embeddings';
import { VectorStore } from '@langchain/core/vectorstores';
import { MemoryVectorStore } from '${memoryPkg}/vectorstores/memory';
import { ClipServeEmbeddings } from '@clipserve/sdk/langchain';
const require = createRequire(import.meta.url);
console.log(JSON.stringify({ core: require('@langchain/core/package.json').version, memoryPkg: require('${memoryPkg}/package.json').version,
  oneCore: MemoryVectorStore.prototype instanceof VectorStore && ClipServeEmbeddings.prototype instanceof Embeddings }));
`,
      );
      const versions = JSON.parse((await node(dir, 'versions.mjs')).stdout) as {
        core: string;
        memoryPkg: string;
        oneCore: boolean;
      };
      expect(versions.core.startsWith(line === '0.3' ? '0.3.' : '1.')).toBe(true);
      expect(versions.memoryPkg.startsWith(line === '0.3' ? '0.3.' : '1.')).toBe(true);
      expect(versions.oneCore).toBe(true);
      await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 200, g: 30, b: 30 } } })
        .jpeg()
        .toFile(path.join(dir, 'query.jpg'));
      const out = JSON.parse((await node(dir, 'snippet.mjs')).stdout) as {
        byText: string;
        byImage: [string, number][];
      };
      // The demo model's vectors carry no meaning, but the store, the query and the image search all ran.
      expect(['a red bicycle', 'a bowl of soup', 'a snowy mountain']).toContain(out.byText);
      expect(out.byImage).toHaveLength(2);
      for (const [, score] of out.byImage) expect(Math.abs(score)).toBeLessThanOrEqual(1 + 1e-6);
    },
    60_000,
  );
});
