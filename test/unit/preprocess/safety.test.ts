/**
 * Untrusted input: every bad file gives a typed ImageError with a clear message, before any
 * large allocation; colour management and EXIF orientation never alter pixels (Pillow ignores both).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { resolveConfig } from '../../../server/src/model/config';
import { DEFAULT_IMAGE_LIMITS, ImageError, preprocessImage, type ImageErrorCode } from '../../../server/src/preprocess';

const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 32 } }).preprocess_cfg;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
const PNG_SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A valid PNG header declaring w×h RGB with a tiny IDAT: a decompression bomb's shape, cheaply. */
function bombPng(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    PNG_SIG,
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(1024))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A JPEG whose frame header declares w×h (the rest is a valid small image's data). */
async function bombJpeg(w: number, h: number): Promise<Buffer> {
  const jpg = Buffer.from(
    await sharp({ create: { width: 16, height: 16, channels: 3, background: '#808080' } })
      .jpeg()
      .toBuffer(),
  );
  for (let i = 2; i < jpg.length - 9;) {
    const m = jpg[i + 1];
    if (m === 0xc0 || m === 0xc2) {
      jpg.writeUInt16BE(h, i + 5);
      jpg.writeUInt16BE(w, i + 7);
      return jpg;
    }
    i += 2 + jpg.readUInt16BE(i + 2);
  }
  throw new Error('no SOF in test JPEG');
}

async function samplePng(): Promise<Buffer> {
  const raw = Buffer.alloc(48 * 40 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 37) % 251;
  return sharp(raw, { raw: { width: 48, height: 40, channels: 3 } })
    .png()
    .toBuffer();
}

async function expectImageError(p: Promise<unknown>, code: ImageErrorCode, message: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageError);
  expect((err as ImageError).code).toBe(code);
  expect((err as ImageError).message).toMatch(message);
}

describe('preprocess: bad input gives typed ImageErrors', () => {
  test('defaults are 20 MiB and 25 megapixels', () => {
    expect(DEFAULT_IMAGE_LIMITS).toEqual({ maxBytes: 20 * 1024 * 1024, maxPixels: 25_000_000 });
  });

  test('zero-byte file → EMPTY', async () => {
    await expectImageError(preprocessImage(new Uint8Array(0), cfg), 'EMPTY', /empty/);
  });

  test('file over maxBytes → TOO_LARGE (checked before parsing)', async () => {
    await expectImageError(
      preprocessImage(new Uint8Array(2048), cfg, { maxBytes: 1024, maxPixels: 1e6 }),
      'TOO_LARGE',
      /2048 bytes.*1024/,
    );
  });

  test('30000×30000 PNG bomb → TOO_MANY_PIXELS, fast and without allocating the pixels', async () => {
    const bomb = bombPng(30000, 30000);
    expect(bomb.length).toBeLessThan(200);
    const rss0 = process.memoryUsage().rss;
    const t0 = Date.now();
    await expectImageError(preprocessImage(bomb, cfg), 'TOO_MANY_PIXELS', /30000x30000 = 900000000 pixels/);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(100 * 1024 * 1024);
  });

  test('JPEG whose header declares 60000×60000 → TOO_MANY_PIXELS', async () => {
    await expectImageError(preprocessImage(await bombJpeg(60000, 60000), cfg), 'TOO_MANY_PIXELS', /60000x60000/);
  });

  test('custom maxPixels applies to ordinary images', async () => {
    await expectImageError(
      preprocessImage(await samplePng(), cfg, { maxBytes: 1e6, maxPixels: 1000 }),
      'TOO_MANY_PIXELS',
      /48x40 = 1920 pixels.*1000/,
    );
  });

  test('truncated PNG → CORRUPT', async () => {
    const png = await samplePng();
    await expectImageError(preprocessImage(png.subarray(0, Math.floor(png.length / 2)), cfg), 'CORRUPT', /PNG/);
  });

  test('truncated JPEG → CORRUPT', async () => {
    const raw = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 7) % 256;
    const jpg = await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } })
      .jpeg({ quality: 95 })
      .toBuffer();
    await expectImageError(preprocessImage(jpg.subarray(0, Math.floor(jpg.length * 0.6)), cfg), 'CORRUPT', /JPEG/);
  });

  test('PNG signature followed by garbage → CORRUPT', async () => {
    await expectImageError(
      preprocessImage(Buffer.concat([PNG_SIG, Buffer.from('definitely not chunks')]), cfg),
      'CORRUPT',
      /PNG/,
    );
  });

  test('non-image bytes → UNSUPPORTED_FORMAT', async () => {
    await expectImageError(
      preprocessImage(Buffer.from('{"hello": "world"}\n'), cfg),
      'UNSUPPORTED_FORMAT',
      /unrecognised image format.*JPEG, PNG/,
    );
  });

  test('known but unsupported formats (SVG, BMP, AVIF) → UNSUPPORTED_FORMAT', async () => {
    const svg = Buffer.from(
      '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
    );
    const bmp = Buffer.concat([Buffer.from('BM'), Buffer.alloc(64)]);
    const avif = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } })
      .avif()
      .toBuffer();
    for (const b of [svg, bmp, avif])
      await expectImageError(preprocessImage(b, cfg), 'UNSUPPORTED_FORMAT', /unsupported/);
  });

  test('extreme aspect ratios → UNSUPPORTED_FORMAT (zero-width or gigantic resize), quickly', async () => {
    // 1×20000 palette PNG: 'shortest' would need 224×4480000 (fine) but 'longest' gives width 0.
    const tall = await sharp(Buffer.alloc(20000, 9), { raw: { width: 1, height: 20000, channels: 1 } })
      .png({ palette: true, colours: 2 })
      .toBuffer();
    await expectImageError(
      preprocessImage(tall, { ...cfg, resize_mode: 'longest' }),
      'UNSUPPORTED_FORMAT',
      /aspect ratio too extreme.*1x20000 resizes to 0x32/,
    );
    expect((await preprocessImage(tall, cfg)).length).toBe(3 * 32 * 32);
    // 1×1e6 (1 megapixel, a few KB): 'shortest' at 224 would be 224×224000000.
    const needle = await sharp(Buffer.alloc(1_000_000, 200), { raw: { width: 1, height: 1_000_000, channels: 1 } })
      .png()
      .toBuffer();
    const t0 = Date.now();
    await expectImageError(preprocessImage(needle, { ...cfg, size: 224 }), 'UNSUPPORTED_FORMAT', /224x224000000/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  test('invalid limits and configs are programming errors (RangeError), not ImageErrors', async () => {
    const png = await samplePng();
    await expect(preprocessImage(png, cfg, { maxBytes: 0, maxPixels: 10 })).rejects.toThrow(RangeError);
    await expect(preprocessImage(png, { ...cfg, fill_color: 300 })).rejects.toThrow(RangeError);
  });
});

describe('preprocess: mutated files never crash', () => {
  test('random byte flips and truncations of every fixture give a tensor or an ImageError', async () => {
    const dir = path.join(__dirname, '..', '..', 'fixtures', 'preprocess');
    const files = fs.readdirSync(dir).filter((f) => /\.(png|gif|tif|jpg|webp)$/.test(f));
    let seed = 7;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const seen: Record<string, number> = {};
    for (let it = 0; it < 240; it++) {
      const file = files[it % files.length];
      const b = Buffer.from(fs.readFileSync(path.join(dir, file)));
      let input: Buffer = b;
      if (it % 3 === 0) input = b.subarray(0, Math.floor(rnd() * b.length));
      else {
        // Early bytes hit headers and chunk lengths, later ones hit compressed data.
        const span = it % 3 === 1 ? Math.min(64, b.length) : b.length;
        for (let i = 0; i < 1 + Math.floor(rnd() * 6); i++) b[Math.floor(rnd() * span)] = Math.floor(rnd() * 256);
      }
      try {
        const t = await preprocessImage(input, cfg);
        expect(t.length).toBe(3 * 32 * 32);
        seen.ok = (seen.ok ?? 0) + 1;
      } catch (err) {
        if (!(err instanceof ImageError))
          throw new Error(`${file} (case ${it}) failed with a non-ImageError: ${String(err)}`);
        seen[err.code] = (seen[err.code] ?? 0) + 1;
      }
    }
    expect(seen.CORRUPT).toBeGreaterThan(0);
  });
});

describe('preprocess: metadata never changes pixels', () => {
  /** Inserts chunk `c` right after IHDR. */
  function withChunk(png: Buffer, c: Buffer): Buffer {
    return Buffer.concat([png.subarray(0, 33), c, png.subarray(33)]);
  }
  function findChunk(png: Buffer, type: string): Buffer {
    for (let i = 8; i < png.length;) {
      const len = png.readUInt32BE(i);
      if (png.toString('latin1', i + 4, i + 8) === type) return png.subarray(i, i + 12 + len);
      i += 12 + len;
    }
    throw new Error(`no ${type} chunk`);
  }

  test('an embedded Display-P3 ICC profile is ignored (no colour conversion)', async () => {
    const plain = await samplePng();
    const p3 = await sharp(plain).withIccProfile('p3').png().toBuffer();
    const tagged = withChunk(plain, findChunk(p3, 'iCCP'));
    expect((await sharp(tagged).metadata()).hasProfile).toBe(true);
    expect(await preprocessImage(tagged, cfg)).toEqual(await preprocessImage(plain, cfg));
  });

  test('EXIF orientation is not applied', async () => {
    const plain = await samplePng();
    const rotated = await sharp(plain).withMetadata({ orientation: 6 }).png().toBuffer();
    expect((await sharp(rotated).metadata()).orientation).toBe(6);
    expect(await preprocessImage(rotated, cfg)).toEqual(await preprocessImage(plain, cfg));
  });

  test('only the first frame of an animated GIF is used', async () => {
    const frame = (v: number): Buffer => Buffer.alloc(20 * 20 * 3, v);
    // A 20×40 strip written as two 20×20 pages (frames).
    const raw = { width: 20, height: 40, channels: 3 as const, pageHeight: 20 };
    const anim = await sharp(Buffer.concat([frame(10), frame(200)]), { raw })
      .gif()
      .toBuffer();
    expect((await sharp(anim).metadata()).pages).toBe(2);
    const first = await sharp(frame(10), { raw: { width: 20, height: 20, channels: 3 } })
      .png()
      .toBuffer();
    expect(await preprocessImage(anim, cfg)).toEqual(await preprocessImage(first, cfg));
  });
});
