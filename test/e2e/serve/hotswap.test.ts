/**
 * Hot swap under load: 20 concurrent callers keep embedding while ModelService.ActivateModel
 * switches versions back and forth; no call fails and every answer is exactly the vector of the
 * version it names. Activating a broken version (a corrupted weights file) answers the caller with
 * a clear error while the old version keeps serving.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import type { RunningServer } from '../../../server/src/serve/server';
import { client, rejection, renderIcon, unary, type Any, type Client } from '../../helpers/finetune-fixtures';
import { startTinyServer, writeVersions } from '../../helpers/model-versions';

jest.setTimeout(120_000);

const TEXT = 'a red star on a white background';

describe('ActivateModel hot swap', () => {
  let tmp: string;
  let server: RunningServer;
  let embed: Client;
  let models: Client;
  let icon: Buffer;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-swap-'));
    // Versions other than the configured one enter the registry the way a job's output does; seed-3 is broken.
    const base = await writeVersions(tmp, path.join(tmp, 'data'), [1, 2, 3], [3]);
    icon = await renderIcon('star', 'red', 'white');
    server = await startTinyServer({ model: base, dataDir: path.join(tmp, 'data'), maxQueueDelayMs: 1 });
    embed = client('EmbeddingService', server.port);
    models = client('ModelService', server.port);
  });

  afterAll(async () => {
    embed?.close();
    models?.close();
    await server?.shutdown(0);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const embedBoth = async (): Promise<{ version: string; text: number[]; image: number[] }> => {
    const [t, i] = await Promise.all([
      unary(embed, 'EmbedText', { texts: [TEXT] }),
      unary(embed, 'EmbedImage', { images: [icon] }),
    ]);
    // Both halves must come from one version for the reference check below to be exact.
    return {
      version: t.modelVersion === i.modelVersion ? t.modelVersion : `${t.modelVersion}|${i.modelVersion}`,
      text: t.embeddings[0].values,
      image: i.embeddings[0].values,
    };
  };

  it('serves every call during swaps, each answered entirely by the version it names', async () => {
    const reference = new Map<string, { text: number[]; image: number[] }>();
    reference.set('seed-1', await embedBoth());
    await unary(models, 'ActivateModel', { version: 'seed-2' });
    reference.set('seed-2', await embedBoth());
    await unary(models, 'ActivateModel', { version: 'seed-1' });

    let stop = false;
    const failures: unknown[] = [];
    const answers: Any[] = [];
    const caller = async () => {
      while (!stop) {
        try {
          const t = await unary(embed, 'EmbedText', { texts: [TEXT] });
          const i = await unary(embed, 'EmbedImage', { images: [icon] });
          answers.push(
            { version: t.modelVersion, text: t.embeddings[0].values },
            { version: i.modelVersion, image: i.embeddings[0].values },
          );
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const callers = Array.from({ length: 20 }, caller);
    const seen: string[] = [];
    for (const version of ['seed-2', 'seed-1', 'seed-2']) {
      await new Promise((r) => setTimeout(r, 150));
      const res = await unary(models, 'ActivateModel', { version });
      seen.push(res.model.version);
      expect(res.model.active).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 150));
    stop = true;
    await Promise.all(callers);

    expect(failures).toEqual([]);
    expect(seen).toEqual(['seed-2', 'seed-1', 'seed-2']);
    const versions = new Set(answers.map((a) => a.version));
    expect(versions).toEqual(new Set(['seed-1', 'seed-2']));
    for (const a of answers) {
      const ref = reference.get(a.version)!;
      const [got, want] = a.text ? [a.text, ref.text] : [a.image, ref.image];
      for (let k = 0; k < want.length; k++) expect(Math.abs(got[k] - want[k])).toBeLessThan(1e-5);
    }
    expect(answers.length).toBeGreaterThan(40);
    const info = await unary(embed, 'GetModelInfo', {});
    expect(info.version).toBe('seed-2');
  });

  it('keeps the old version serving when the new one fails to load, and tells the caller why', async () => {
    const before = await unary(embed, 'GetModelInfo', {});
    const err = await rejection(unary(models, 'ActivateModel', { version: 'seed-3' }));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/cannot load .*models\/seed-3: visual\.onnx\.data: checksum mismatch/);
    const after = await unary(embed, 'GetModelInfo', {});
    expect(after.version).toBe(before.version);
    const served = await embedBoth();
    expect(served.version).toBe(before.version);
    const { models: listed, activeVersion } = await unary(models, 'ListModels', {});
    expect(activeVersion).toBe(before.version);
    expect(listed.filter((m: Any) => m.active).map((m: Any) => m.version)).toEqual([before.version]);
    const unknown = await rejection(unary(models, 'ActivateModel', { version: 'no-such-version' }));
    expect(unknown.code).toBe(status.NOT_FOUND);
  });

  it('remembers the active version across a restart', async () => {
    await server.shutdown(0);
    server = await startTinyServer({ model: path.join(tmp, 'v1'), dataDir: path.join(tmp, 'data') });
    embed.close();
    embed = client('EmbeddingService', server.port);
    expect((await unary(embed, 'GetModelInfo', {})).version).toBe('seed-2');
  });
});
