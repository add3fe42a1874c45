/** Small files whose headers declare huge images: the hostile inputs of the isolation suites. */
import * as zlib from 'node:zlib';

function chunk(type: string, data: Buffer): Buffer {
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A PNG header declaring w×h RGB, with a small IDAT: the shape of a 48 KB 50,000,000×1 PNG. */
export function declaredPng(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    sig,
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(48 * 1024))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A lossless WebP header declaring w×h (≤ 16384): a 2 KB file that would decode to w·h·4 bytes. */
export function declaredWebp(w: number, h: number): Buffer {
  const bits = ((w - 1) | ((h - 1) << 14)) >>> 0;
  const vp8l = Buffer.alloc(5 + 2000);
  vp8l[0] = 0x2f;
  vp8l.writeUInt32LE(bits, 1);
  const body = Buffer.concat([Buffer.from('WEBPVP8L', 'latin1'), Buffer.alloc(4), vp8l]);
  body.writeUInt32LE(vp8l.length, 8);
  const riff = Buffer.alloc(8);
  riff.write('RIFF', 0, 'latin1');
  riff.writeUInt32LE(body.length, 4);
  return Buffer.concat([riff, body]);
}
