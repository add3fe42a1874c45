/**
 * Makes a repeated `authorization` header visible to the API-key check. Node's HTTP/2 layer treats
 * `authorization` as a single-value field: of two it keeps the first and silently drops the rest,
 * so grpc-js's metadata (and checkCall's "more than one authorization header") never sees the
 * second one, while a proxy in front may honour the other. The raw header list of each incoming
 * stream still holds all of them: a listener placed before grpc-js's puts every value back, as a
 * list, into the header object grpc-js builds the call's metadata from.
 *
 * grpc-js does not expose its HTTP/2 servers; they are read from its `http2Servers` map. Should a
 * later grpc-js rename it, this returns false and the caller logs that the check is weaker.
 */
import type * as http2 from 'node:http2';
import type * as grpc from '@grpc/grpc-js';

const hooked = new WeakSet<http2.Http2Server>();

export function exposeRepeatedHeaders(server: grpc.Server, names: readonly string[]): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const wanted = new Set(names.map((n) => n.toLowerCase()));
  for (const h2 of servers.keys() as IterableIterator<http2.Http2Server>) {
    if (hooked.has(h2)) continue;
    hooked.add(h2);
    h2.prependListener(
      'stream',
      (_stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
        if (!Array.isArray(rawHeaders)) return;
        const seen = new Map<string, string[]>();
        for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
          const name = rawHeaders[i].toLowerCase();
          if (!wanted.has(name)) continue;
          const values = seen.get(name) ?? [];
          values.push(rawHeaders[i + 1]);
          seen.set(name, values);
        }
        for (const [name, values] of seen) if (values.length > 1) (headers as Record<string, unknown>)[name] = values;
      },
    );
  }
  return true;
}
