/**
 * Fuzzing the HTTP API of the running server (`clipserve serve --http-port auto`, a child process):
 * thousands of malformed bodies for POST /v1/embeddings (mutated and truncated JSON, random JSON
 * values in every field, deep nesting, prototype-poisoning keys, invalid UTF-8, bad images inside
 * valid envelopes, wrong content types). A body that is not valid JSON must get a 4xx with
 * OpenAI's error shape; no body may get a 5xx; and the server must still answer a good request and
 * still be running afterwards. Deterministic: the generator is seeded (FUZZ_SEED overrides).
 */
import { seededRandom } from '../../server/src/util/random';
import { ServerProcess, startServerProcess } from '../helpers/server-process';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const SEED = Number(process.env.FUZZ_SEED ?? 20261204);
const CASES = 3000;
const CONCURRENCY = 16;
const rand = seededRandom(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));

const VALID = JSON.stringify({
  model: '',
  input: ['a photo of a cat', { text: 'a dog' }, { image: 'iVBORw0KGgo=' }],
  encoding_format: 'float',
});

function randomJson(depth: number): unknown {
  switch (int(depth > 3 ? 5 : 8)) {
    case 0:
      return null;
    case 1:
      return rand() < 0.5;
    case 2:
      return pick([0, -1, 1e308, -1e-308, 2 ** 53 + 1, 3.5, Infinity]);
    case 3:
      return pick([
        '',
        'x',
        '\u0000',
        '\ud800',
        'data:image/png;base64,',
        'https://example.com/a.png',
        '{}',
        'A'.repeat(1000),
      ]);
    case 4:
      return randomBytes(int(40)).toString('base64');
    case 5:
      return Array.from({ length: int(4) }, () => randomJson(depth + 1));
    case 6:
      return Object.fromEntries(
        Array.from({ length: int(4) }, () => [
          pick(['text', 'image', 'input', 'model', '__proto__', 'constructor', 'x']),
          randomJson(depth + 1),
        ]),
      );
    default:
      return { text: randomJson(depth + 1) };
  }
}

/** One malformed (or mutated, possibly still valid) body and its content type. */
function makeCase(): { kind: string; body: Buffer; type: string } {
  const json = 'application/json';
  switch (int(10)) {
    case 0: {
      const b = Buffer.from(VALID);
      for (let k = 0, n = 1 + int(4); k < n; k++) b[int(b.length)] = int(256);
      return { kind: 'byte flips', body: b, type: json };
    }
    case 1:
      return { kind: 'truncated', body: Buffer.from(VALID.slice(0, int(VALID.length))), type: json };
    case 2:
      return { kind: 'random bytes', body: randomBytes(int(200)), type: json };
    case 3: {
      const body: Any = { model: '', input: 'x' };
      body[pick(['input', 'model', 'encoding_format', 'dimensions', 'modality', 'user'])] = randomJson(0);
      return { kind: 'random field value', body: Buffer.from(JSON.stringify(body)), type: json };
    }
    case 4:
      return { kind: 'random JSON', body: Buffer.from(JSON.stringify(randomJson(0)) ?? 'null'), type: json };
    case 5: {
      const depth = pick([100, 1000, 20_000]);
      return {
        kind: 'deep nesting',
        body: Buffer.from(`{"model":"","input":${'['.repeat(depth)}${']'.repeat(depth)}}`),
        type: json,
      };
    }
    case 6:
      return {
        kind: 'prototype poisoning',
        body: Buffer.from(
          pick([
            '{"model":"","input":"x","__proto__":{"admin":true}}',
            '{"model":"","input":"x","constructor":{"prototype":{"a":1}}}',
          ]),
        ),
        type: json,
      };
    case 7:
      return {
        kind: 'invalid UTF-8',
        body: Buffer.concat([
          Buffer.from('{"model":"","input":"'),
          Buffer.from([0xc3, 0x28, 0xff, 0xfe]),
          Buffer.from('"}'),
        ]),
        type: json,
      };
    case 8: {
      const image = pick([
        randomBytes(int(300)).toString('base64'),
        'data:image/png;base64,' + randomBytes(64).toString('base64'),
        '////',
        'data:image/png,raw',
      ]);
      return { kind: 'bad image', body: Buffer.from(JSON.stringify({ model: '', input: [{ image }] })), type: json };
    }
    default:
      return {
        kind: 'wrong content type',
        body: Buffer.from(VALID),
        type: pick([
          'text/plain',
          'application/x-www-form-urlencoded',
          'multipart/form-data; boundary=x',
          'application/jsonp',
        ]),
      };
  }
}

function isJson(body: Buffer): boolean {
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

describe('fuzzing the HTTP API', () => {
  let server: ServerProcess;

  beforeAll(async () => {
    server = await startServerProcess([
      '--http-port',
      'auto',
      '--max-message-bytes',
      '200000',
      '--max-image-bytes',
      '100000',
      '--max-items-per-request',
      '16',
    ]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  test(`${CASES} malformed bodies: 4xx in OpenAI's error shape for every one that is not JSON, never a 5xx, server up`, async () => {
    const base = `http://127.0.0.1:${server.httpPort}`;
    const byStatus = new Map<number, number>();
    const failures: string[] = [];
    const cases = Array.from({ length: CASES }, makeCase);
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const c = cases[next++];
        const res = await fetch(`${base}/v1/embeddings`, {
          method: 'POST',
          headers: { 'content-type': c.type },
          body: c.body,
        });
        const text = await res.text();
        byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
        let shapeOk = res.status === 200;
        if (res.status !== 200) {
          try {
            const err = (JSON.parse(text) as Any).error;
            shapeOk =
              typeof err?.message === 'string' && typeof err?.type === 'string' && 'param' in err && 'code' in err;
          } catch {
            shapeOk = false;
          }
        }
        const mustBe4xx = c.type === 'application/json' ? !isJson(c.body) : true;
        const bad = res.status >= 500 || (mustBe4xx && (res.status < 400 || res.status > 499)) || !shapeOk;
        if (bad && failures.length < 10)
          failures.push(`${c.kind}: ${res.status} ${text.slice(0, 200)} for ${c.body.toString('utf8').slice(0, 120)}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    console.log(
      `HTTP fuzz (seed ${SEED}): ${CASES} bodies, statuses ${JSON.stringify(Object.fromEntries([...byStatus].sort()))}`,
    );
    expect(failures).toEqual([]);
    expect([...byStatus.keys()].every((s) => s < 500)).toBe(true);

    // Still serving, and still the same process.
    const ok = await fetch(`${base}/v1/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: '', input: 'still here' }),
    });
    expect(ok.status).toBe(200);
    expect(server.child.exitCode).toBeNull();
    expect(server.logs().filter((l) => Number(l.level) >= 50)).toEqual([]);
  });
});
