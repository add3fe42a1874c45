/**
 * Issue 13 (isolation), the pieces below the transport: images are priced and refused from their
 * headers before any pixel is decoded, cancelled work leaves the decode pool's queue, admission is
 * bounded by cost (pixels) as well as by count, tokenization reads only as much of a text as can
 * reach the context and runs in the worker pool, and training augmentation keeps the preprocessed
 * pixels instead of re-encoding a full-resolution PNG.
 */
import * as fs from 'node:fs';
import sharp from 'sharp';
import { augmentTensor } from '../../server/src/preprocess/augment';
import { resolveConfig } from '../../server/src/model/config';
import { DEFAULT_IMAGE_LIMITS, ImageError, PreprocessPool } from '../../server/src/preprocess';
import { decodeImage, inspectImage } from '../../server/src/preprocess/decode';
import { PoolJobAbortedError } from '../../server/src/preprocess/pool';
import { Embedder } from '../../server/src/inference/embedder';
import type { EmbeddingModel } from '../../server/src/inference/model-port';
import { ClipTokenizer, DEFAULT_CONTEXT_LENGTH } from '../../server/src/tokenizer';
import { seededRandom } from '../../server/src/util/random';
import { declaredPng, declaredWebp } from '../helpers/hostile-images';
import { describeGolden, goldenPath } from '../helpers/shared';

const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 32 } }).preprocess_cfg;

describe('header-only checks before decoding', () => {
  test('the declared size is read without a decoder, as sharp reads it, for every accepted format', async () => {
    const base = sharp({ create: { width: 37, height: 23, channels: 3, background: '#336699' } });
    const files: [string, Buffer][] = [
      ['png', await base.clone().png().toBuffer()],
      ['jpeg', await base.clone().jpeg().toBuffer()],
      ['gif', await base.clone().gif().toBuffer()],
      ['webp lossy', await base.clone().webp().toBuffer()],
      ['webp lossless', await base.clone().webp({ lossless: true }).toBuffer()],
      [
        'webp alpha (VP8X)',
        await sharp({ create: { width: 37, height: 23, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
          .webp()
          .toBuffer(),
      ],
      ['tiff', await base.clone().tiff().toBuffer()],
    ];
    for (const [name, bytes] of files) {
      const meta = await sharp(bytes).metadata();
      expect([name, inspectImage(bytes, DEFAULT_IMAGE_LIMITS).pixels]).toEqual([name, meta.width * meta.height]);
    }
  });

  test('a 2 KB lossless WebP declaring 7000×7000 and a 50,000,000×1 PNG are refused from the header', () => {
    for (const bytes of [declaredWebp(7000, 7000), declaredPng(50_000_000, 1)]) {
      expect(() => inspectImage(bytes, DEFAULT_IMAGE_LIMITS)).toThrow(
        expect.objectContaining({ code: 'TOO_MANY_PIXELS' }),
      );
    }
  });

  test('an extreme aspect ratio within the pixel limit is refused before its pixels are decoded', async () => {
    const t0 = performance.now();
    const err = await decodeImage(
      declaredPng(50_000_000, 1),
      { maxBytes: 1 << 20, maxPixels: 60_000_000 },
      { cfg },
    ).catch((e: unknown) => e);
    const ms = performance.now() - t0;
    expect(err).toBeInstanceOf(ImageError);
    expect((err as ImageError).message).toMatch(/aspect ratio too extreme: 50000000x1/);
    console.log(`50,000,000×1 PNG refused in ${ms.toFixed(1)} ms (header only)`);
    // Decoding 150 MB of rows would take seconds; a header read takes milliseconds.
    expect(ms).toBeLessThan(2000);
  });
});

describe('the decode pool: cancellation and tokenization', () => {
  const vocab = goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz');
  let pool: PreprocessPool;
  let slow: Buffer;
  beforeAll(async () => {
    pool = new PreprocessPool({ size: 1, cfg, ...(fs.existsSync(vocab) ? { vocabPath: vocab } : {}) });
    const raw = Buffer.alloc(3000 * 3000 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 2654435761) >>> 24;
    slow = await sharp(raw, { raw: { width: 3000, height: 3000, channels: 3 } })
      .png({ compressionLevel: 1 })
      .toBuffer();
  });
  afterAll(() => pool.close());

  test('a cancelled job never starts; a running one releases its caller at once', async () => {
    const running = new AbortController();
    const first = pool.run(slow, { signal: running.signal });
    const queuedCtl = new AbortController();
    const queued = pool.run(slow, { signal: queuedCtl.signal });
    expect(pool.queued).toBe(1);
    queuedCtl.abort();
    expect(pool.queued).toBe(0);
    await expect(queued).rejects.toBeInstanceOf(PoolJobAbortedError);
    running.abort();
    await expect(first).rejects.toBeInstanceOf(PoolJobAbortedError);
    // The worker finishes the abandoned decode, then serves the next job normally.
    const small = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#102030' } })
      .png()
      .toBuffer();
    expect(await pool.run(small)).toHaveLength(3 * 32 * 32);
  });

  test('an image over the decode budget fails with DECODE_TIMEOUT or decodes within it', async () => {
    // The decode budget is the pool's, fixed when it is made.
    const budgeted = new PreprocessPool({ size: 1, cfg, decodeTimeoutSeconds: 1 });
    const out = await budgeted
      .run(slow)
      .then(
        (t) => `decoded (${t.length} values)`,
        (e: unknown) => (e as ImageError).code,
      )
      .finally(() => budgeted.close());
    expect(['DECODE_TIMEOUT', `decoded (${3 * 32 * 32} values)`]).toContain(out);
  });

  const goldenTest = fs.existsSync(vocab) ? test : test.skip;
  goldenTest('texts are tokenized in the pool exactly as in-process', async () => {
    const tok = ClipTokenizer.fromMergesFile(vocab);
    const texts = ['a photo of a cat', 'x'.repeat(16_384), 'Ã©'.repeat(3000), 'word '.repeat(3000)];
    for (const t of texts) {
      const pooled = await pool.runText(t, DEFAULT_CONTEXT_LENGTH);
      const local = tok.tokenize(t);
      expect([Array.from(pooled.ids), pooled.truncated, pooled.eotIndex]).toEqual([
        Array.from(local.ids),
        local.truncated,
        local.eotIndex,
      ]);
    }
  });
});

describeGolden('tokenizing only what reaches the context', () => {
  test('ids equal the full encoding cut to the context, for texts around and far past the cut', () => {
    const tok = ClipTokenizer.fromMergesFile(goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz'));
    const rand = seededRandom(13);
    const words = [
      'photo',
      'of',
      'a',
      'cat',
      "it's",
      'Zürich',
      'naïve',
      '日本語',
      '😀',
      '&amp;',
      'x1y2',
      '...',
      'ΑΣ',
      'Ã©',
      '\n',
    ];
    for (let n = 0; n < 300; n++) {
      const len = Math.floor(rand() * 200);
      const text = Array.from({ length: len }, () => words[Math.floor(rand() * words.length)]).join(
        rand() < 0.5 ? ' ' : '',
      );
      const full = tok.encode(text);
      const ctx = 2 + Math.floor(rand() * 90);
      const { ids, truncated } = tok.tokenize(text, ctx);
      const kept = Math.min(full.length, ctx - 2);
      const expected = new Int32Array(ctx);
      expected[0] = tok.sotId;
      expected.set(full.slice(0, kept), 1);
      expected[kept + 1] = tok.eotId;
      expect([text, Array.from(ids), truncated]).toEqual([text, Array.from(expected), full.length > ctx - 2]);
    }
  });
});

describe('admission by cost', () => {
  test('the embedder refuses a request over the per-request decode budget before decoding anything', () => {
    let decoded = 0;
    const model = {
      info: { embedDim: 4, contextLength: 8 },
      tokenizer: { tokenize: () => ({ ids: new Int32Array(8), truncated: false, eotIndex: 1 }) },
      imageLimits: DEFAULT_IMAGE_LIMITS,
      preprocessImage: async () => {
        decoded++;
        return new Float32Array(3 * 32 * 32);
      },
      encodeImage: async (_p: Float32Array, n: number) => new Float32Array(n * 4),
      encodeText: async (_i: Int32Array, n: number) => new Float32Array(n * 4),
    } as unknown as EmbeddingModel;
    const embedder = new Embedder(model, {
      maxBatchSize: 8,
      maxQueueDelayMs: 0,
      queueBound: 64,
      maxRequestPixels: 30_000_000,
      queuePixels: 100_000_000,
    });
    const big = declaredPng(5000, 4000);
    expect(() => embedder.embedImages([big, big])).toThrow(expect.objectContaining({ code: 'OVER_BUDGET' }));
    expect(decoded).toBe(0);
    embedder.close();
  });
});

describe('training augmentation on the preprocessed pixels', () => {
  const tensorOf = (rand: () => number): Float32Array => {
    const plane = 16 * 16;
    const t = new Float32Array(3 * plane);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < plane; p++) t[c * plane + p] = (Math.floor(rand() * 256) / 255 - cfg.mean[c]) / cfg.std[c];
    return t;
  };
  test('no augmentation: the same tensor; grayscale: equal 8-bit channels, still normalised', () => {
    const t = tensorOf(seededRandom(1));
    expect(
      augmentTensor(t, cfg, { colorJitter: [0, 0, 0, 0], colorJitterProb: 0, grayscaleProb: 0 }, seededRandom(2)),
    ).toBe(t);
    const g = augmentTensor(
      t,
      cfg,
      { colorJitter: [0, 0, 0, 0], colorJitterProb: 0, grayscaleProb: 1 },
      seededRandom(2),
    );
    const plane = t.length / 3;
    const v = (c: number, p: number) => Math.round((g[c * plane + p] * cfg.std[c] + cfg.mean[c]) * 255);
    for (let p = 0; p < plane; p++) {
      expect(v(0, p)).toBe(v(1, p));
      expect(v(1, p)).toBe(v(2, p));
      expect(v(0, p)).toBeGreaterThanOrEqual(0);
      expect(v(0, p)).toBeLessThanOrEqual(255);
    }
  });
});

describe('a decode pool of child processes (background work)', () => {
  test('gives the same tensors and errors as worker threads, and closes cleanly', async () => {
    const threads = new PreprocessPool({ size: 1, cfg });
    const children = new PreprocessPool({ size: 1, cfg, isolation: 'process', priority: 'low' });
    try {
      const png = await sharp({ create: { width: 97, height: 71, channels: 3, background: '#a05020' } })
        .png()
        .toBuffer();
      const augment = {
        settings: {
          colorJitter: [0.2, 0.2, 0.1, 0] as [number, number, number, number],
          colorJitterProb: 1,
          grayscaleProb: 0,
        },
        seed: 9,
      };
      for (const opts of [{}, { augment }])
        expect(Array.from(await children.run(png, opts))).toEqual(Array.from(await threads.run(png, opts)));
      await expect(children.run(Buffer.from('not an image'))).rejects.toMatchObject({ code: 'UNSUPPORTED_FORMAT' });
    } finally {
      await Promise.all([threads.close(), children.close()]);
    }
  });
});
