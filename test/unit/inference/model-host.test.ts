/**
 * ModelHost, the served model versions, with fake models (no onnxruntime): pinned versions load on
 * demand, loads of one version are coalesced, the least recently used inactive version is unloaded
 * when the budget (versions or bytes) needs room, the active version never is, a version being
 * unloaded finishes its calls first, a failed load is remembered, unknown versions are NOT_FOUND.
 */
import pino from 'pino';
import {
  ModelActivationError,
  ModelBudgetError,
  ModelHost,
  type ModelBudget,
} from '../../../server/src/inference/model-host';
import { ModelNotFoundError } from '../../../server/src/versions/registry';
import { Embedder } from '../../../server/src/inference/embedder';
import type { EmbeddingModel, ServedModelInfo } from '../../../server/src/inference/model-port';

const DIM = 4;
const CTX = 8;

/** A model whose text vectors are all `seed`; encodeText waits for `gate` when one is set. */
class FakeModel implements EmbeddingModel {
  closed = false;
  gate: Promise<void> | undefined;
  readonly info: ServedModelInfo;
  readonly tokenizer = { tokenize: () => ({ ids: new Int32Array(CTX), truncated: false, eotIndex: 1 }) };
  readonly imageLimits = { maxBytes: 1 << 20, maxPixels: 1 << 20 };

  constructor(
    readonly version: string,
    readonly seed: number,
  ) {
    this.info = {
      name: 'fake',
      version,
      embedDim: DIM,
      imageSize: 8,
      contextLength: CTX,
      logitScale: 100,
      provider: 'cpu',
      demo: false,
      precision: 'fp32',
    } as ServedModelInfo;
  }

  async preprocessImage(): Promise<Float32Array> {
    return new Float32Array(3 * 8 * 8);
  }

  async encodeText(_ids: Int32Array, n: number): Promise<Float32Array> {
    if (this.closed) throw new Error(`${this.version} used after close`);
    await this.gate;
    if (this.closed) throw new Error(`${this.version} closed while running`);
    return new Float32Array(n * DIM).fill(this.seed);
  }

  async encodeImage(_p: Float32Array, n: number): Promise<Float32Array> {
    return new Float32Array(n * DIM).fill(this.seed);
  }

  async warmup(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
  }
}

const VERSIONS: Record<string, { seed: number; bytes: number }> = {
  v1: { seed: 1, bytes: 100 },
  v2: { seed: 2, bytes: 100 },
  v3: { seed: 3, bytes: 100 },
  big: { seed: 9, bytes: 1000 },
  broken: { seed: 0, bytes: 10 },
};

function setup(budget: ModelBudget) {
  const loads: string[] = [];
  const models = new Map<string, FakeModel>();
  let loadDelay: Promise<void> = Promise.resolve();
  const host = new ModelHost<FakeModel>({
    load: async (dir) => {
      loads.push(dir);
      await loadDelay;
      if (dir === 'broken') throw new Error('checksum mismatch');
      const m = new FakeModel(dir, VERSIONS[dir].seed);
      models.set(dir, m);
      return m;
    },
    createEmbedder: (m) => new Embedder(m, { maxBatchSize: 8, maxQueueDelayMs: 0, queueBound: 64 }),
    locate: (v) => {
      if (!(v in VERSIONS)) throw new ModelNotFoundError(v);
      return v; // the fake's bundle directory is the version name
    },
    sizeOf: (dir) => VERSIONS[dir].bytes,
    budget,
    logger: pino({ level: 'silent' }),
  });
  const first = new FakeModel('v1', 1);
  models.set('v1', first);
  host.install(first, 'v1');
  return {
    host,
    loads,
    models,
    delayLoads: () => {
      let release!: () => void;
      loadDelay = new Promise((r) => (release = r));
      return () => release();
    },
  };
}

async function embedOn(host: ModelHost<FakeModel>, version: string): Promise<{ version: string; value: number }> {
  const lease = await host.acquire(version);
  try {
    const [r] = await Promise.all(lease.embedder.embedTexts(['x']));
    return { version: lease.info.version, value: r.vector[0] };
  } finally {
    lease.release();
  }
}

describe('ModelHost: several versions at once', () => {
  test('a pinned version loads on demand and answers with its own weights; "" is the active one', async () => {
    const { host, loads } = setup({ maxVersions: 3, maxBytes: 0 });
    expect(await embedOn(host, '')).toEqual({ version: 'v1', value: 1 });
    expect(await embedOn(host, 'v2')).toEqual({ version: 'v2', value: 2 });
    expect(await embedOn(host, 'v2')).toEqual({ version: 'v2', value: 2 });
    expect(loads).toEqual(['v2']);
    expect(host.loadedVersions().map((v) => [v.version, v.active])).toEqual([
      ['v1', true],
      ['v2', false],
    ]);
    expect(host.info().version).toBe('v1');
    await host.close();
  });

  test('concurrent first calls to one version share a single load', async () => {
    const { host, loads, delayLoads } = setup({ maxVersions: 3, maxBytes: 0 });
    const release = delayLoads();
    const calls = Array.from({ length: 20 }, () => embedOn(host, 'v2'));
    await new Promise((r) => setImmediate(r));
    release();
    const results = await Promise.all(calls);
    expect(new Set(results.map((r) => `${r.version}:${r.value}`))).toEqual(new Set(['v2:2']));
    expect(loads).toEqual(['v2']);
    await host.close();
  });

  test('the least recently used inactive version is unloaded for room; the active one never is', async () => {
    const { host, models } = setup({ maxVersions: 2, maxBytes: 0 });
    await embedOn(host, 'v2');
    await embedOn(host, 'v3'); // evicts v2 (v1 is active)
    await new Promise((r) => setImmediate(r));
    expect(host.loadedVersions().map((v) => v.version)).toEqual(['v1', 'v3']);
    expect(models.get('v2')!.closed).toBe(true);
    expect(models.get('v1')!.closed).toBe(false);
    await embedOn(host, 'v2'); // evicts v3, reloads v2
    expect(host.loadedVersions().map((v) => v.version)).toEqual(['v1', 'v2']);
    // With room for only the active version, a pin to another cannot be served.
    const tight = setup({ maxVersions: 1, maxBytes: 0 });
    await expect(embedOn(tight.host, 'v2')).rejects.toBeInstanceOf(ModelBudgetError);
    expect(await embedOn(tight.host, '')).toEqual({ version: 'v1', value: 1 });
    await Promise.all([host.close(), tight.host.close()]);
  });

  test('the byte budget unloads by size, and refuses a version that can never fit beside the active one', async () => {
    const { host } = setup({ maxVersions: 10, maxBytes: 250 });
    await embedOn(host, 'v2');
    await embedOn(host, 'v3'); // 300 > 250: v2 goes
    expect(host.loadedVersions().map((v) => v.version)).toEqual(['v1', 'v3']);
    await expect(embedOn(host, 'big')).rejects.toThrow(/needs 1000 bytes.*--max-loaded-bytes/);
    await host.close();
  });

  test('a version unloaded while its calls run finishes them first, then closes', async () => {
    const { host, models } = setup({ maxVersions: 2, maxBytes: 0 });
    await embedOn(host, 'v2');
    const v2 = models.get('v2')!;
    let release!: () => void;
    v2.gate = new Promise((r) => (release = r));
    const running = Array.from({ length: 5 }, () => embedOn(host, 'v2'));
    await new Promise((r) => setImmediate(r));
    await embedOn(host, 'v3'); // needs v2's room while v2's calls are held
    expect(host.isLoaded('v2')).toBe(false);
    expect(v2.closed).toBe(false);
    release();
    expect((await Promise.all(running)).map((r) => r.value)).toEqual([2, 2, 2, 2, 2]);
    await new Promise((r) => setTimeout(r, 10));
    expect(v2.closed).toBe(true);
    await host.close();
  });

  test('activation switches to a loaded version without reloading it and keeps the previous one loaded', async () => {
    const { host, loads } = setup({ maxVersions: 2, maxBytes: 0 });
    await embedOn(host, 'v2');
    const { info, previous } = await host.activate('v2');
    expect([info.version, previous.version]).toEqual(['v2', 'v1']);
    expect(loads).toEqual(['v2']);
    expect(await embedOn(host, '')).toEqual({ version: 'v2', value: 2 });
    expect(host.loadedVersions().map((v) => [v.version, v.active])).toEqual([
      ['v2', true],
      ['v1', false],
    ]);
    // With one slot, activation still works: the old active version is unloaded after the switch.
    const one = setup({ maxVersions: 1, maxBytes: 0 });
    await one.host.activate('v3');
    await new Promise((r) => setTimeout(r, 10));
    expect(one.host.loadedVersions().map((v) => v.version)).toEqual(['v3']);
    expect(one.models.get('v1')!.closed).toBe(true);
    await Promise.all([host.close(), one.host.close()]);
  });

  test('unknown versions are ModelNotFoundError; a failed load is remembered for pins, retried by activation', async () => {
    const { host, loads } = setup({ maxVersions: 3, maxBytes: 0 });
    await expect(host.acquire('nope')).rejects.toBeInstanceOf(ModelNotFoundError);
    await expect(host.acquire('broken')).rejects.toThrow(/cannot load broken: checksum mismatch/);
    await expect(host.acquire('broken')).rejects.toBeInstanceOf(ModelActivationError);
    expect(loads).toEqual(['broken']);
    await expect(host.activate('broken')).rejects.toBeInstanceOf(ModelActivationError);
    expect(loads).toEqual(['broken', 'broken']);
    expect(host.info().version).toBe('v1');
    await host.close();
  });
});
