/**
 * The SDK's pure pieces, from its compiled CommonJS build: target parsing, the gRPC service config
 * (retry policy, load balancing), request splitting, bounded concurrency, embedding decoding and
 * error mapping. Behaviour against a server is in sdk-client / sdk-transport.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ensureSdkBuilt, SDK_DIR } from '../../helpers/sdk';

ensureSdkBuilt();
/* eslint-disable @typescript-eslint/no-require-imports */
const internal = <T>(mod: string): T => require(path.join(SDK_DIR, 'dist', 'cjs', `${mod}.js`)) as T;
const channel = internal<typeof import('../../../sdk/src/channel')>('channel');
const batching = internal<typeof import('../../../sdk/src/batching')>('batching');
const vectors = internal<typeof import('../../../sdk/src/vectors')>('vectors');
const errors = internal<typeof import('../../../sdk/src/errors')>('errors');

describe('targets', () => {
  test.each([
    'localhost:50051',
    '10.0.0.7:1',
    '[::1]:50051',
    'dns:///clipserve-headless.ml.svc.cluster.local:50051',
    'ipv4:127.0.0.1:1,127.0.0.1:2',
    'unix:/tmp/s.sock',
  ])('accepts %s', (a) => expect(channel.parseTarget(a)).toBe(a));
  test.each([
    ['', /empty/],
    ['localhost', /host:port/],
    ['http://x:1', /scheme/],
    ['dns:///name', /port/],
    ['h:99999', /host:port/],
  ])('rejects %j', (a, re) => expect(() => channel.parseTarget(a as string)).toThrow(re as RegExp));
});

describe('service config', () => {
  test('round_robin, and a retry policy for UNAVAILABLE/RESOURCE_EXHAUSTED on the unary methods only', () => {
    const cfg = JSON.parse(
      channel.serviceConfig('round_robin', {
        maxAttempts: 3,
        initialBackoffMs: 50,
        maxBackoffMs: 2000,
        backoffMultiplier: 3,
      }),
    );
    expect(cfg.loadBalancingConfig).toEqual([{ round_robin: {} }]);
    const [mc] = cfg.methodConfig;
    expect(mc.retryPolicy).toEqual({
      maxAttempts: 3,
      initialBackoff: '0.050s',
      maxBackoff: '2.000s',
      backoffMultiplier: 3,
      retryableStatusCodes: ['UNAVAILABLE', 'RESOURCE_EXHAUSTED'],
    });
    const methods = mc.name.map((n: { method: string }) => n.method);
    expect(methods).toEqual(
      expect.arrayContaining(['EmbedText', 'EmbedImage', 'Similarity', 'Rank', 'Classify', 'GetModelInfo', 'Check']),
    );
    expect(methods).not.toContain('EmbedStream');
    // grpc-js accepts it as a channel option (it validates the service config when the channel is made)
    const c = new grpc.Client(
      '127.0.0.1:1',
      grpc.credentials.createInsecure(),
      channel.channelOptions({ address: '127.0.0.1:1' }),
    );
    c.close();
  });

  test('retry: false leaves the policy out; bad settings are refused', () => {
    expect(JSON.parse(channel.serviceConfig('pick_first', false))).toEqual({
      loadBalancingConfig: [{ pick_first: {} }],
    });
    expect(() => channel.serviceConfig('round_robin', { maxAttempts: 6 })).toThrow(RangeError);
    expect(() => channel.serviceConfig('round_robin', { initialBackoffMs: 0 })).toThrow(RangeError);
  });

  test('message limits size the retry buffer; serverName overrides the TLS name and authority', () => {
    const o = channel.channelOptions({
      address: 'x:1',
      maxSendMessageBytes: 1 << 20,
      tls: { serverName: 'clipserve.internal' },
      keepalive: { timeMs: 5000 },
    });
    expect(o['grpc.max_send_message_length']).toBe(1 << 20);
    expect(o['grpc.per_rpc_retry_buffer_size']).toBe(1 << 20);
    expect(o['grpc.ssl_target_name_override']).toBe('clipserve.internal');
    expect(o['grpc.default_authority']).toBe('clipserve.internal');
    expect(o['grpc.keepalive_time_ms']).toBe(5000);
  });
});

describe('request splitting', () => {
  async function collect<T>(
    g: AsyncGenerator<{ offset: number; items: T[] }>,
  ): Promise<{ offset: number; items: T[] }[]> {
    const out = [];
    for await (const b of g) out.push(b);
    return out;
  }

  test('cuts by item count and by bytes; an oversized item travels alone; offsets index the input', async () => {
    const sizes = [10, 10, 10, 100, 10, 10, 10, 10, 10];
    const batches = await collect(
      batching.batchesOf(
        sizes.length,
        (i) => sizes[i],
        (s) => s,
        { maxItems: 3, maxBytes: 50 },
      ),
    );
    // 6 bytes of framing per item: 16 + 16 + 16 = 48 fits, the 100 goes alone
    expect(batches.map((b) => [b.offset, b.items])).toEqual([
      [0, [10, 10, 10]],
      [3, [100]],
      [4, [10, 10, 10]],
      [7, [10, 10]],
    ]);
  });

  test('loads lazily: at most one batch ahead of the consumer', async () => {
    let loaded = 0;
    const g = batching.batchesOf(
      100,
      (i) => {
        loaded++;
        return i;
      },
      () => 1,
      { maxItems: 10, maxBytes: 1e9 },
    );
    await g.next();
    expect(loaded).toBeLessThanOrEqual(11);
    await g.return(undefined);
  });

  test('runBounded never exceeds the concurrency; the first failure stops the rest', async () => {
    async function* numbers(n: number): AsyncGenerator<number> {
      for (let i = 0; i < n; i++) yield i;
    }
    let active = 0;
    let peak = 0;
    const done: number[] = [];
    await batching.runBounded(numbers(40), 3, undefined, async (i) => {
      peak = Math.max(peak, ++active);
      await new Promise((r) => setTimeout(r, 2));
      active--;
      done.push(i);
    });
    expect(peak).toBe(3);
    expect(done.sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i));

    const started: number[] = [];
    const cancelled: number[] = [];
    const err = await batching
      .runBounded(numbers(100), 4, undefined, async (i, signal) => {
        started.push(i);
        if (i === 5)
          throw new errors.ClipServeError({ code: grpc.status.INVALID_ARGUMENT, details: 'bad', itemIndex: 5 });
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 50);
          signal.addEventListener('abort', () => {
            clearTimeout(t);
            cancelled.push(i);
            resolve();
          });
        });
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(errors.ClipServeError);
    expect((err as InstanceType<typeof errors.ClipServeError>).itemIndex).toBe(5);
    expect(started.length).toBeLessThan(12);
    expect(cancelled.length).toBeGreaterThan(0);
  });
});

describe('decoding and errors', () => {
  test('f32le bytes at an unaligned offset decode exactly; packed floats too', () => {
    const values = [0.5, -1.25, 3.0e-8, 42];
    const backing = Buffer.alloc(1 + 16);
    values.forEach((v, i) => backing.writeFloatLE(v, 1 + 4 * i));
    const bytes = backing.subarray(1);
    expect(Array.from(vectors.decodeEmbedding({ values: [], valuesF32le: bytes, truncated: false }, 4))).toEqual(
      values.map(Math.fround),
    );
    expect(Array.from(vectors.decodeEmbedding({ values, valuesF32le: Buffer.alloc(0), truncated: false }, 4))).toEqual(
      values.map(Math.fround),
    );
    expect(() => vectors.decodeEmbedding({ values: [], valuesF32le: bytes, truncated: false }, 3)).toThrow(/dim 3/);
  });

  test("a server status naming an item maps to the caller's index", () => {
    const se = Object.assign(new Error('3 INVALID_ARGUMENT: images[2]: unsupported image format'), {
      code: grpc.status.INVALID_ARGUMENT,
      details: 'images[2]: unsupported image format',
      metadata: new grpc.Metadata(),
    });
    const e = errors.toClipServeError(se, (i) => 100 + i);
    expect(e).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      codeName: 'INVALID_ARGUMENT',
      itemIndex: 102,
      details: 'images[2]: unsupported image format',
    });
    expect(e.retryable).toBe(false);
    expect(errors.requestItemIndex('texts[17]: too long')).toBe(17);
    expect(errors.requestItemIndex('queue full')).toBeUndefined();
    expect(errors.toClipServeError(new Error('boom'))).toMatchObject({ code: grpc.status.UNKNOWN, details: 'boom' });
  });
});
