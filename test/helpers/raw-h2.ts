/**
 * One HTTP/2 request written as raw frames on a TCP socket, for headers Node's own client refuses
 * to send (a repeated `authorization`): connection preface, SETTINGS, a HEADERS frame whose header
 * block is plain HPACK literals (no Huffman, no indexing), and one DATA frame. The response is not
 * decoded (the suites read its outcome from the server's metrics); the promise resolves when the
 * server ends the stream or the connection.
 */
import * as net from 'node:net';

function frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
  const b = Buffer.alloc(9);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId & 0x7fffffff, 5);
  return b;
}

/** An HPACK integer with an `prefixBits`-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, firstByteFlags = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByteFlags | value]);
  const out = [firstByteFlags | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** "Literal Header Field without Indexing — New Name" (RFC 7541 §6.2.2), raw strings. */
function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  return Buffer.concat([Buffer.from([0x00]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v]);
}

export async function rawHttp2Request(port: number, headers: [string, string][], body: Buffer): Promise<void> {
  const block = Buffer.concat(headers.map(([k, v]) => literal(k, v)));
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => (socket.once('connect', resolve), socket.once('error', reject)));
  const END_STREAM = 0x1;
  const END_HEADERS = 0x4;
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frameHeader(0, 0x4, 0, 0), // SETTINGS (empty)
      frameHeader(block.length, 0x1, END_HEADERS, 1),
      block,
      frameHeader(body.length, 0x0, END_STREAM, 1),
      body,
    ]),
  );
  // Read frames until stream 1 ends (END_STREAM from the server) or the connection closes.
  await new Promise<void>((resolve) => {
    let buf = Buffer.alloc(0);
    const done = () => (socket.destroy(), resolve());
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const [type, flags] = [buf[3], buf[4]];
        const stream = buf.readUInt32BE(5) & 0x7fffffff;
        if (type === 0x4 && !(flags & 0x1)) socket.write(frameHeader(0, 0x4, 0x1, 0)); // ack SETTINGS
        if (stream === 1 && ((flags & END_STREAM && (type === 0x1 || type === 0x0)) || type === 0x3)) return done();
        if (type === 0x7) return done(); // GOAWAY
        buf = buf.subarray(9 + len);
      }
    });
    socket.on('close', resolve);
    socket.on('error', resolve);
    setTimeout(done, 10_000);
  });
}
