/**
 * PreprocessPool: worker threads (compiled JS from dist/, built by `npm test`) give exactly the
 * tensors of the in-process call, errors come back as typed ImageErrors, and the caller's bytes
 * are left intact (the pool sends a private copy and receives the tensor by transfer).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { resolveConfig } from '../../../server/src/model/config';
import { ImageError, PreprocessPool, preprocessImage } from '../../../server/src/preprocess';

const DIR = path.join(__dirname, '..', '..', 'fixtures', 'preprocess');
const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;
/** Bitwise equality of two tensors (jest's toEqual walks typed arrays element by element: slow). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}

const files = [
  'png_rgb_97x71.png',
  'png_rgba_97x71.png',
  'gif_trns_screen_105x80.gif',
  'png_gray16_97x71.png',
  'tiff_cmyk_97x71.tif',
  'webp_rgba_97x71.webp',
];

describe('PreprocessPool', () => {
  let pool: PreprocessPool;
  beforeAll(() => {
    pool = new PreprocessPool({ size: 2, cfg });
  });
  afterAll(async () => {
    await pool.close();
  });

  test('gives the same tensors as preprocessImage, for concurrent jobs beyond the pool size', async () => {
    const inputs = files.map((f) => fs.readFileSync(path.join(DIR, f)));
    const pooled = await Promise.all(inputs.map((b) => pool.run(b)));
    for (let i = 0; i < inputs.length; i++) {
      const direct = await preprocessImage(inputs[i], cfg);
      expect(pooled[i]).toBeInstanceOf(Float32Array);
      expect(pooled[i].length).toBe(3 * 224 * 224);
      // The tensor owns its (transferred) buffer outright.
      expect(pooled[i].buffer.byteLength).toBe(3 * 224 * 224 * 4);
      expect(sameBits(pooled[i], direct)).toBe(true);
    }
  });

  test("leaves the caller's buffer attached and unchanged, even when it is a view into a larger buffer", async () => {
    const file = fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png'));
    const big = Buffer.alloc(file.length + 100, 7);
    file.copy(big, 50);
    const view = big.subarray(50, 50 + file.length);
    const out = await pool.run(view);
    expect(view.byteLength).toBe(file.length);
    expect(Buffer.compare(view, file)).toBe(0);
    expect(big[0]).toBe(7);
    expect(sameBits(out, await preprocessImage(file, cfg))).toBe(true);
  });

  test('errors cross back as ImageError with their code', async () => {
    const results = await Promise.allSettled([
      pool.run(new Uint8Array(0)),
      pool.run(Buffer.from('plain text')),
      pool.run(fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png')).subarray(0, 200)),
    ]);
    const codes = results.map((r) =>
      r.status === 'rejected' && r.reason instanceof ImageError ? r.reason.code : r.status,
    );
    expect(codes).toEqual(['EMPTY', 'UNSUPPORTED_FORMAT', 'CORRUPT']);
    // The pool keeps working after failures.
    expect((await pool.run(fs.readFileSync(path.join(DIR, 'png_gray_97x71.png')))).length).toBe(3 * 224 * 224);
  });

  test('keeps the event loop free while large images are processed', async () => {
    const raw = Buffer.alloc(2000 * 1500 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 31) & 255;
    const jpg = await sharp(raw, { raw: { width: 2000, height: 1500, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer();
    // Event-loop utilisation counts the time the main loop spends running code (not waiting).
    // In-process, each of these images keeps it busy for tens of milliseconds; through the pool
    // the main thread only copies the bytes out and receives the tensors.
    let start = performance.eventLoopUtilization();
    const out = await Promise.all([0, 1, 2, 3].map(() => pool.run(jpg)));
    const pooled = performance.eventLoopUtilization(start).active;
    start = performance.eventLoopUtilization();
    for (let i = 0; i < 4; i++) await preprocessImage(jpg, cfg);
    const inProcess = performance.eventLoopUtilization(start).active;
    expect(out).toHaveLength(4);
    // Typically ~15 ms vs ~450 ms on a 2-core machine; the bound leaves room for a busy CI box.
    expect(pooled).toBeLessThan(inProcess / 4);
  });

  test('close() lets running jobs finish, rejects new ones', async () => {
    const p = new PreprocessPool({ size: 1, cfg });
    const file = fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png'));
    const running = expect(p.run(file)).resolves.toHaveLength(3 * 224 * 224);
    const queued = expect(p.run(file)).rejects.toThrow(/closed/);
    await p.close();
    await running;
    await queued;
    await expect(p.run(file)).rejects.toThrow(/closed/);
  });

  test('maxWorkersPerOwner: one owner occupies at most that many workers; another owner starts at once', async () => {
    const p = new PreprocessPool({ size: 2, cfg, maxWorkersPerOwner: 1 });
    const file = fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png'));
    // Dispatch is synchronous in run(): with a cap of 1, three of a's four jobs wait although a
    // worker is free.
    const flood = Array.from({ length: 4 }, () => p.run(file, { owner: 'a' }));
    expect(p.queued).toBe(3);
    // b's job takes the free worker at once instead of queueing behind a's.
    const other = p.run(file, { owner: 'b' });
    expect(p.queued).toBe(3);
    const expected = await preprocessImage(file, cfg);
    for (const t of [...(await Promise.all(flood)), await other]) expect(sameBits(t, expected)).toBe(true);
    // Jobs without an owner are not capped (fine-tuning, the CLI).
    const anonymous = [p.run(file), p.run(file)];
    expect(p.queued).toBe(0);
    await Promise.all(anonymous);
    await p.close();
    expect(() => new PreprocessPool({ size: 2, cfg, maxWorkersPerOwner: 0 })).toThrow(RangeError);
  });

  test('a worker that dies fails only its own job and is replaced', async () => {
    const p = new PreprocessPool({ size: 1, cfg });
    const file = fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png'));
    const job = p.run(file);
    // White-box: kill the only worker while it holds the job.
    const slots = (p as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots;
    await slots[0].worker.terminate();
    await expect(job).rejects.toThrow(/preprocess worker failed/);
    expect(sameBits(await p.run(file), await preprocessImage(file, cfg))).toBe(true);
    await p.close();
  });

  test('rejects a bad size, config or limits at construction', () => {
    expect(() => new PreprocessPool({ size: 0, cfg })).toThrow(RangeError);
    expect(() => new PreprocessPool({ size: 1, cfg: { ...cfg, fill_color: -1 } })).toThrow(RangeError);
    expect(() => new PreprocessPool({ size: 1, cfg, limits: { maxBytes: 10, maxPixels: 0 } })).toThrow(RangeError);
    expect(() => new PreprocessPool({ size: 1, cfg, decodeTimeoutSeconds: -1 })).toThrow(RangeError);
  });

  test('the limits are fixed when the pool is made and hold every job (run and verify)', async () => {
    const p = new PreprocessPool({ size: 1, cfg, limits: { maxBytes: 1_000_000, maxPixels: 97 * 71 - 1 } });
    try {
      expect(p.limits).toEqual({ maxBytes: 1_000_000, maxPixels: 97 * 71 - 1 });
      const file = fs.readFileSync(path.join(DIR, 'png_rgb_97x71.png'));
      await expect(p.run(file)).rejects.toMatchObject({ code: 'TOO_MANY_PIXELS' });
      await expect(p.verify(file)).rejects.toMatchObject({ code: 'TOO_MANY_PIXELS' });
    } finally {
      await p.close();
    }
  });
});
