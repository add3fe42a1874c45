/**
 * Several model versions served at once, through the real server: the re-indexing workflow under
 * load (queries pinned to version N and unpinned ones, an indexer pinned to N+1, then the switch
 * to N+1) with zero failed calls and every answer exactly the vector of the version it names;
 * on-demand loading within --max-loaded-versions (least recently used out, the active version
 * kept, concurrent first calls sharing one load); ListModels, GetModelInfo and the metrics; and
 * examples/reindex, the documented workflow, run as a user would.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { loadServedModel } from '../../../server/src/serve/model-loader';
import type { RunningServer } from '../../../server/src/serve/server';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { client, rejection, renderIcon, unary, type Any, type Client } from '../../helpers/finetune-fixtures';
import { startTinyServer, writeVersions } from '../../helpers/model-versions';
import { ensureSdkBuilt, REPO_ROOT } from '../../helpers/sdk';

jest.setTimeout(180_000);

const TEXT = 'a red star on a white background';

describe('several model versions at once', () => {
  let tmp: string;
  let server: RunningServer;
  let embed: Client;
  let models: Client;
  let icon: Buffer;
  const loads: string[] = [];
  const reference = new Map<string, { text: number[]; image: number[] }>();

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-versions-'));
    const dataDir = path.join(tmp, 'data');
    const base = await writeVersions(tmp, dataDir, [1, 2, 3]);
    icon = await renderIcon('star', 'red', 'white');
    server = await startTinyServer({
      model: base,
      dataDir,
      maxLoadedVersions: 2,
      maxQueueDelayMs: 1,
      loadModel: (config, logger) => {
        loads.push(path.basename(String(config.model)));
        return loadServedModel(config, logger);
      },
    });
    embed = client('EmbeddingService', server.port);
    models = client('ModelService', server.port);
  });

  afterAll(async () => {
    embed?.close();
    models?.close();
    await server?.shutdown(0);
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const embedBoth = async (modelVersion: string): Promise<{ version: string; text: number[]; image: number[] }> => {
    const [t, i] = await Promise.all([
      unary(embed, 'EmbedText', { texts: [TEXT], modelVersion }),
      unary(embed, 'EmbedImage', { images: [icon], modelVersion }),
    ]);
    expect(t.modelVersion).toBe(i.modelVersion);
    return { version: t.modelVersion, text: t.embeddings[0].values, image: i.embeddings[0].values };
  };

  const expectVectorOf = (a: { version: string; text?: number[]; image?: number[] }) => {
    const ref = reference.get(a.version);
    if (!ref) throw new Error(`an answer names version ${a.version}, which no call asked for`);
    const [got, want] = a.text ? [a.text, ref.text] : [a.image!, ref.image];
    let worst = 0;
    for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(got[k] - want[k]));
    expect(worst).toBeLessThan(1e-5);
  };

  it('serves a pinned non-active version on demand, loading it once for concurrent first calls', async () => {
    const first = await embedBoth('');
    expect(first.version).toBe('seed-1');
    reference.set('seed-1', first);
    // 12 concurrent first calls to seed-2: one load, every answer by seed-2.
    const answers = await Promise.all(Array.from({ length: 6 }, () => embedBoth('seed-2')));
    expect(new Set(answers.map((a) => a.version))).toEqual(new Set(['seed-2']));
    expect(loads.filter((l) => l === 'seed-2')).toHaveLength(1);
    reference.set('seed-2', answers[0]);
    for (const a of answers) expectVectorOf(a);
    expect(answers[0].text).not.toEqual(first.text);
    // The active version is untouched.
    expect((await unary(embed, 'GetModelInfo', {})).version).toBe('seed-1');
    const listed = await unary(models, 'ListModels', {});
    expect(listed.activeVersion).toBe('seed-1');
    expect(listed.loadedVersions).toEqual(['seed-1', 'seed-2']);
    expect(Object.fromEntries(listed.models.map((m: Any) => [m.version, [m.active, m.loaded]]))).toEqual({
      'seed-1': [true, true],
      'seed-2': [false, true],
      'seed-3': [false, false],
    });
    const info = await unary(embed, 'GetModelInfo', { modelVersion: 'seed-2' });
    expect(info).toMatchObject({ version: 'seed-2', activeVersion: 'seed-1', loadedVersions: ['seed-1', 'seed-2'] });
    expect((await rejection(unary(embed, 'EmbedText', { texts: ['x'], modelVersion: 'seed-99' }))).code).toBe(
      status.NOT_FOUND,
    );
  });

  it('re-indexing under load: queries on N, indexer on N+1, then the switch: zero failures, every answer from the version it names', async () => {
    let stop = false;
    const failures: unknown[] = [];
    const answers: { caller: string; version: string; text?: number[]; image?: number[] }[] = [];
    const caller = (name: string, modelVersion: string) => async () => {
      let k = 0;
      while (!stop) {
        try {
          if (k++ % 2 === 0) {
            const t = await unary(embed, 'EmbedText', { texts: [TEXT], modelVersion });
            answers.push({ caller: name, version: t.modelVersion, text: t.embeddings[0].values });
          } else {
            const i = await unary(embed, 'EmbedImage', { images: [icon], modelVersion });
            answers.push({ caller: name, version: i.modelVersion, image: i.embeddings[0].values });
          }
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const callers = [
      ...Array.from({ length: 6 }, () => caller('queries-on-N', 'seed-1')),
      ...Array.from({ length: 6 }, () => caller('unpinned', '')),
      ...Array.from({ length: 4 }, () => caller('indexer-on-N+1', 'seed-2')),
    ].map((run) => run());
    await new Promise((r) => setTimeout(r, 300));
    const switched = await unary(models, 'ActivateModel', { version: 'seed-2' });
    expect(switched).toMatchObject({
      previousVersion: 'seed-1',
      model: { version: 'seed-2', active: true, loaded: true },
    });
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(callers);

    const count = (name: string, version: string) =>
      answers.filter((a) => a.caller === name && a.version === version).length;
    console.log(
      `re-indexing under load: ${answers.length} answers, ${failures.length} failed; queries on N: ${count('queries-on-N', 'seed-1')}, ` +
        `unpinned: ${count('unpinned', 'seed-1')} by N + ${count('unpinned', 'seed-2')} by N+1, indexer on N+1: ${count('indexer-on-N+1', 'seed-2')}`,
    );
    expect(failures).toEqual([]);
    for (const a of answers) expectVectorOf(a);
    const versionsOf = (name: string) => new Set(answers.filter((a) => a.caller === name).map((a) => a.version));
    expect(versionsOf('queries-on-N')).toEqual(new Set(['seed-1']));
    expect(versionsOf('indexer-on-N+1')).toEqual(new Set(['seed-2']));
    expect(versionsOf('unpinned')).toEqual(new Set(['seed-1', 'seed-2']));
    expect(answers.length).toBeGreaterThan(50);
    // The switch loaded nothing: seed-2 was loaded by the indexer's calls.
    expect(loads.filter((l) => l === 'seed-2')).toHaveLength(1);
    expect((await unary(models, 'ListModels', {})).loadedVersions).toEqual(['seed-2', 'seed-1']);

    const scrape = await server.metrics.registry.metrics();
    expect(scrape).toMatch(/clipserve_model_version_loaded\{version="seed-2",active="true"\} 1/);
    expect(scrape).toMatch(/clipserve_model_version_loaded\{version="seed-1",active="false"\} 1/);
    for (const v of ['seed-1', 'seed-2'])
      expect(scrape).toMatch(
        new RegExp(`clipserve_version_items_embedded_total\\{version="${v}",modality="text"\\} [1-9]`),
      );
  });

  it('unloads the least recently used inactive version for room and never the active one', async () => {
    // Budget 2: seed-2 active, seed-1 loaded; pinning seed-3 unloads seed-1.
    await embedBoth('seed-2');
    const third = await embedBoth('seed-3');
    expect(third.version).toBe('seed-3');
    expect((await unary(models, 'ListModels', {})).loadedVersions).toEqual(['seed-2', 'seed-3']);
    // seed-1 comes back on demand (unloading seed-3) and still gives its own vectors.
    const again = await embedBoth('seed-1');
    expectVectorOf(again);
    expect((await unary(models, 'ListModels', {})).loadedVersions).toEqual(['seed-2', 'seed-1']);
    expect(loads.filter((l) => l === 'v1' || l === 'seed-1')).toHaveLength(2);
  });

  it('examples/reindex: re-indexes with the next version while queries run, switches, activates; no query fails', async () => {
    ensureSdkBuilt();
    const photos = path.join(tmp, 'photos');
    fs.mkdirSync(photos);
    for (const [shape, colour] of [
      ['star', 'red'],
      ['circle', 'blue'],
      ['square', 'green'],
      ['cross', 'yellow'],
    ]) {
      fs.writeFileSync(path.join(photos, `${shape}.png`), await renderIcon(shape, colour, 'white'));
      fs.writeFileSync(path.join(photos, `${shape}.txt`), `a ${colour} ${shape} on a white background`);
    }
    const { stdout } = await promisify(execFile)(process.execPath, [
      path.join(REPO_ROOT, 'examples', 'reindex', 'reindex.mjs'),
      '--server',
      `127.0.0.1:${server.port}`,
      '--dir',
      photos,
      '--from',
      'seed-2',
      '--to',
      'seed-3',
      '--query',
      'a red star on a white background',
    ]);
    const out = JSON.parse(stdout);
    expect(out).toMatchObject({
      indexed: 4,
      from: 'seed-2',
      to: 'seed-3',
      activeVersion: 'seed-3',
      previousVersion: 'seed-2',
      failures: [],
    });
    expect(out.queriesByVersion['seed-2']).toBeGreaterThan(0);
    expect(out.queriesByVersion['seed-3']).toBeGreaterThan(0);
    expect(Object.keys(out.queriesByVersion).sort()).toEqual(['seed-2', 'seed-3']);
    expect([out.before.version, out.after.version]).toEqual(['seed-2', 'seed-3']);
    const listed = await unary(models, 'ListModels', {});
    expect(listed.activeVersion).toBe('seed-3');
    expect(listed.loadedVersions).toEqual(['seed-3', 'seed-2']);
  });
});
