/**
 * The WebAssembly SIMD kernels against their TypeScript references, and the direct PNG decoder
 * against libpng (through sharp) and Pillow's decoded pixels: on every golden and fixture image,
 * and on random sizes, windows, filters and row filters. Both sides must give the same bits.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import { resolveConfig } from '../../../server/src/model/config';
import { DEFAULT_IMAGE_LIMITS, ImageError, preprocessImage } from '../../../server/src/preprocess';
import { decodeImage } from '../../../server/src/preprocess/decode';
import { decodePlainPng, tableCrc32, unfilter } from '../../../server/src/preprocess/png-decode';
import { resizeSeparable, type ResampleFilter } from '../../../server/src/preprocess/resample';
import { setSimdKernels, simdKernels } from '../../../server/src/preprocess/simd/instance';
import { KERNELS_WASM_BASE64 } from '../../../server/src/preprocess/simd/kernels-wasm';
import { resizeSeparableSimd } from '../../../server/src/preprocess/simd/resample';
import { unfilterSimd } from '../../../server/src/preprocess/simd/unfilter';
import { transformImage } from '../../../server/src/preprocess/transform';
import { describeGolden, goldenPath } from '../../helpers/shared';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { compileWat } = require('../../../server/src/preprocess/simd/build-wasm.js') as {
  compileWat: (file: string) => Promise<Buffer>;
};

const FIXTURES = path.join(__dirname, '..', '..', 'fixtures', 'preprocess');
const cfg = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size: 224 } }).preprocess_cfg;

/** Deterministic pseudo-random numbers (the failures must reproduce). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.compare(
    Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  ) === 0;
const sha = (a: Uint8Array): string => createHash('sha256').update(a).digest('hex');

afterEach(() => setSimdKernels(true));

test('this runtime has the kernels (Node 20: WebAssembly SIMD)', () => {
  expect(simdKernels()).not.toBeNull();
});

test('the embedded module is kernels.wat as compiled now (npm run build:wasm)', async () => {
  const bytes = await compileWat(
    path.join(__dirname, '..', '..', '..', 'server', 'src', 'preprocess', 'simd', 'kernels.wat'),
  );
  expect(Buffer.from(KERNELS_WASM_BASE64, 'base64').equals(bytes)).toBe(true);
});

describe('resample: SIMD passes = TypeScript passes', () => {
  test('random images (1 to 4 bands), sizes, windows, filters, alpha', () => {
    const rand = rng(7);
    for (let iter = 0; iter < 400; iter++) {
      const ch = (1 + Math.floor(rand() * 4)) as 1 | 2 | 3 | 4;
      const w = 1 + Math.floor(rand() * 160);
      const h = 1 + Math.floor(rand() * 160);
      const outW = rand() < 0.2 ? w : 1 + Math.floor(rand() * 200);
      const outH = rand() < 0.2 ? h : 1 + Math.floor(rand() * 200);
      const x0 = Math.floor(rand() * outW);
      const y0 = Math.floor(rand() * outH);
      const win = { x0, y0, w: 1 + Math.floor(rand() * (outW - x0)), h: 1 + Math.floor(rand() * (outH - y0)) };
      const filter: ResampleFilter = rand() < 0.7 ? 'bicubic' : 'bilinear';
      const premultiply = (ch === 2 || ch === 4) && rand() < 0.6;
      const src = new Uint8Array(w * h * ch);
      // Extremes (0/255 runs) and noise: the clamps and the alpha special cases get exercised.
      for (let i = 0; i < src.length; i++) src[i] = rand() < 0.2 ? (rand() < 0.5 ? 0 : 255) : Math.floor(rand() * 256);
      const ref = resizeSeparable(src, w, h, ch, outW, outH, win, filter, premultiply);
      const simd = resizeSeparableSimd(src, w, h, ch, outW, outH, win, filter, premultiply);
      if (!sameBytes(ref, simd))
        throw new Error(`mismatch: ${JSON.stringify({ iter, ch, w, h, outW, outH, win, filter, premultiply })}`);
    }
  });

  const files = [
    ...(fs.existsSync(goldenPath('preprocess'))
      ? fs
          .readdirSync(goldenPath('preprocess'))
          .filter((f) => /\.(png|jpe?g|webp|gif)$/.test(f))
          .map((f) => goldenPath('preprocess', f))
      : []),
    ...fs
      .readdirSync(FIXTURES)
      .filter((f) => /\.(png|jpe?g|webp|gif|tiff?)$/.test(f))
      .map((f) => path.join(FIXTURES, f)),
  ];
  test.each(files.map((f) => [path.basename(f), f]))(
    'transform with and without the kernels: %s',
    async (_name, file) => {
      const img = await decodeImage(fs.readFileSync(file), DEFAULT_IMAGE_LIMITS);
      for (const size of [224, 64]) {
        const c = resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size } }).preprocess_cfg;
        const on = transformImage(img, c);
        setSimdKernels(false);
        const off = transformImage(img, c);
        setSimdKernels(true);
        expect(sameBytes(new Uint8Array(on.buffer), new Uint8Array(off.buffer))).toBe(true);
      }
    },
  );
});

describe('PNG unfilter: SIMD = TypeScript', () => {
  test('every filter type, first rows included, 3 and 4 bytes per pixel', () => {
    const rand = rng(11);
    for (let iter = 0; iter < 200; iter++) {
      const bpp = rand() < 0.5 ? 3 : 4;
      const width = 1 + Math.floor(rand() * 70);
      const height = 1 + Math.floor(rand() * 12);
      const rowBytes = width * bpp;
      const raw = new Uint8Array(height * (rowBytes + 1));
      for (let y = 0; y < height; y++) {
        raw[y * (rowBytes + 1)] = Math.floor(rand() * 5);
        for (let i = 1; i <= rowBytes; i++) raw[y * (rowBytes + 1) + i] = Math.floor(rand() * 256);
      }
      const ref = unfilter(raw, height, rowBytes, bpp)!;
      const simd = unfilterSimd(raw, height, rowBytes, bpp)!;
      if (!sameBytes(ref, simd)) throw new Error(`mismatch: ${JSON.stringify({ iter, bpp, width, height })}`);
    }
  });

  test('a filter type above 4 is refused by both', () => {
    const raw = new Uint8Array([0, 1, 2, 3, 5, 4, 5, 6]);
    expect(unfilter(raw, 2, 3, 3)).toBeNull();
    expect(unfilterSimd(raw, 2, 3, 3)).toBeNull();
  });
});

describe('direct PNG decoding = libpng', () => {
  test.each([1, 2, 3, 4])("random %i-band PNGs with every row filter equal sharp's decode", async (channels) => {
    const rand = rng(100 + channels);
    for (let iter = 0; iter < 6; iter++) {
      const width = 1 + Math.floor(rand() * 90);
      const height = 1 + Math.floor(rand() * 90);
      const px = Buffer.alloc(width * height * channels);
      // Smooth areas and noise, so libpng's adaptive filtering picks every filter type.
      for (let i = 0; i < px.length; i++) px[i] = rand() < 0.5 ? (i * 7) & 255 : Math.floor(rand() * 256);
      const img = sharp(px, { raw: { width, height, channels: channels as 1 | 2 | 3 | 4 } });
      // Without b-w, sharp writes one- and two-band input as RGB(A).
      const png = await (channels <= 2 ? img.toColourspace('b-w') : img)
        .png({ adaptiveFiltering: true, compressionLevel: iter % 10 })
        .toBuffer();
      expect(png[25]).toBe([0, 4, 2, 6][channels - 1]); // the colour type under test
      const mode = (['L', 'LA', 'RGB', 'RGBA'] as const)[channels - 1];
      for (const on of [true, false]) {
        setSimdKernels(on);
        const mine = decodePlainPng(png, mode);
        expect(mine).toBeDefined();
        expect(sameBytes(mine!.data as Uint8Array, px)).toBe(true);
      }
    }
  });

  describeGolden("golden PNGs: Pillow's decoded pixels", () => {
    const index = fs.existsSync(goldenPath('preprocess', 'index.json'))
      ? (
          JSON.parse(fs.readFileSync(goldenPath('preprocess', 'index.json'), 'utf8')) as {
            cases: Array<{ image_file: string; pil_mode: string; decoded: { sha256: string } }>;
          }
        ).cases
      : [];
    const pngs = index.filter((c) => c.image_file.endsWith('.png'));
    test.each(pngs.map((c) => [c.image_file, c]))('%s', (_name, c) => {
      const decoded = decodePlainPng(fs.readFileSync(goldenPath('preprocess', c.image_file)), c.pil_mode as 'RGB');
      if (['RGB', 'RGBA', 'L', 'LA'].includes(c.pil_mode) && !c.image_file.includes('16')) {
        // Plain 8-bit files: decoded here, exactly as Pillow decoded them.
        expect(decoded).toBeDefined();
        expect(sha(decoded!.data as Uint8Array)).toBe(c.decoded.sha256);
      } else {
        // Palette, bilevel, 16-bit: left to sharp.
        expect(decoded).toBeUndefined();
      }
    });
  });

  test("the fallback CRC-32 equals zlib's", () => {
    const data = Buffer.from('IHDR and some bytes \u00ff\u0000', 'latin1');
    expect(tableCrc32(Buffer.from('123456789'))).toBe(0xcbf43926); // the CRC-32 check value
    const z = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
    if (z) expect(tableCrc32(data)).toBe(z(data));
  });

  test('anything unusual or damaged is left to sharp, which gives the error', async () => {
    const px = Buffer.alloc(40 * 30 * 3, 0x5a);
    const png = await sharp(px, { raw: { width: 40, height: 30, channels: 3 } })
      .png()
      .toBuffer();
    expect(decodePlainPng(png, 'RGB')).toBeDefined();
    expect(decodePlainPng(png, 'RGBA')).toBeUndefined(); // not the mode the header parser reported

    const interlaced = await sharp(px, { raw: { width: 40, height: 30, channels: 3 } })
      .png({ progressive: true })
      .toBuffer();
    expect(decodePlainPng(interlaced, 'RGB')).toBeUndefined();
    // ...and still decodes to the same tensor through sharp.
    expect(
      sameBytes(
        new Uint8Array((await preprocessImage(interlaced, cfg)).buffer),
        new Uint8Array((await preprocessImage(png, cfg)).buffer),
      ),
    ).toBe(true);

    const idat = png.indexOf('IDAT');
    const badCrc = Buffer.from(png);
    badCrc[idat + 6] ^= 0xff; // data byte changed, CRC not
    expect(decodePlainPng(badCrc, 'RGB')).toBeUndefined();
    await expect(preprocessImage(badCrc, cfg)).rejects.toBeInstanceOf(ImageError);

    const truncated = png.subarray(0, png.length - 20);
    expect(decodePlainPng(truncated, 'RGB')).toBeUndefined();
    await expect(preprocessImage(truncated, cfg)).rejects.toBeInstanceOf(ImageError);

    // A valid zlib stream holding fewer rows than the header declares (CRC recomputed).
    const short = rebuildIdat(png, zlib.deflateSync(Buffer.alloc(29 * 121)));
    expect(decodePlainPng(short, 'RGB')).toBeUndefined();
    await expect(preprocessImage(short, cfg)).rejects.toBeInstanceOf(ImageError);
    // The same with a row filter type of 7.
    const rows = Buffer.alloc(30 * 121);
    rows[5 * 121] = 7;
    const badFilter = rebuildIdat(png, zlib.deflateSync(rows));
    expect(decodePlainPng(badFilter, 'RGB')).toBeUndefined();
    await expect(preprocessImage(badFilter, cfg)).rejects.toBeInstanceOf(ImageError);
  });
});

/** `png` with its (single) IDAT replaced by `data`, CRC recomputed. */
function rebuildIdat(png: Buffer, data: Buffer): Buffer {
  const at = png.indexOf('IDAT') - 4;
  const len = png.readUInt32BE(at);
  const chunk = Buffer.alloc(12 + data.length);
  chunk.writeUInt32BE(data.length, 0);
  chunk.write('IDAT', 4, 'latin1');
  data.copy(chunk, 8);
  chunk.writeUInt32BE(tableCrc32(chunk.subarray(4, 8 + data.length)), 8 + data.length);
  return Buffer.concat([png.subarray(0, at), chunk, png.subarray(at + 12 + len)]);
}

describe('JPEG decoded to the region the transform reads = the whole decode', () => {
  const jpegs = [
    ...(fs.existsSync(goldenPath('preprocess'))
      ? fs
          .readdirSync(goldenPath('preprocess'))
          .filter((f) => /\.jpe?g$/.test(f))
          .map((f) => goldenPath('preprocess', f))
      : []),
    ...fs
      .readdirSync(FIXTURES)
      .filter((f) => /\.jpe?g$/.test(f))
      .map((f) => path.join(FIXTURES, f)),
  ];
  /** Noise JPEGs of awkward shapes: landscape, portrait, near-square, thin. */
  async function generated(): Promise<Array<[string, Buffer]>> {
    const rand = rng(11);
    const out: Array<[string, Buffer]> = [];
    for (const [w, h] of [
      [613, 401],
      [333, 777],
      [260, 251],
      [1200, 90],
    ]) {
      const px = Buffer.alloc(w * h * 3);
      for (let i = 0; i < px.length; i++) px[i] = Math.floor(rand() * 256);
      out.push([
        `noise_${w}x${h}.jpg`,
        await sharp(px, { raw: { width: w, height: h, channels: 3 } })
          .jpeg({ quality: 85 })
          .toBuffer(),
      ]);
    }
    return out;
  }

  test('every JPEG, sizes, resize modes, filters, with and without the kernels', async () => {
    const inputs: Array<[string, Buffer]> = [
      ...jpegs.map((f): [string, Buffer] => [path.basename(f), fs.readFileSync(f)]),
      ...(await generated()),
    ];
    let cut = 0;
    for (const [name, bytes] of inputs) {
      const whole = await decodeImage(bytes, DEFAULT_IMAGE_LIMITS);
      expect(whole.region).toBeUndefined();
      for (const size of [224, 97, 64]) {
        for (const resize_mode of ['shortest', 'longest', 'squash'] as const) {
          for (const interpolation of ['bicubic', 'bilinear'] as const) {
            const c = {
              ...resolveConfig({ model_cfg: { embed_dim: 8 }, preprocess_cfg: { size, resize_mode } }).preprocess_cfg,
              interpolation,
            };
            const part = await decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg: c });
            if (part.region) cut++;
            for (const simd of [true, false]) {
              setSimdKernels(simd);
              const a = transformImage(whole, c);
              const b = transformImage(part, c);
              if (!sameBytes(new Uint8Array(a.buffer), new Uint8Array(b.buffer)))
                throw new Error(
                  `mismatch: ${JSON.stringify({ name, size, resize_mode, interpolation, simd, region: part.region })}`,
                );
            }
            setSimdKernels(true);
          }
        }
      }
    }
    // The cut is exercised, not skipped everywhere.
    expect(cut).toBeGreaterThan(10);
  });

  test('a region decoded for one cfg is refused by the transform of another', async () => {
    const [, bytes] = (await generated())[0];
    const part = await decodeImage(bytes, DEFAULT_IMAGE_LIMITS, { cfg });
    expect(part.region).toBeDefined();
    const other = resolveConfig({
      model_cfg: { embed_dim: 8 },
      preprocess_cfg: { size: 64, resize_mode: 'squash' },
    }).preprocess_cfg;
    expect(() => transformImage(part, other)).toThrow(/does not hold what this transform reads/);
  });
});
