/**
 * The transport floor: a unary round trip through grpc-js between two processes on loopback,
 * with a handler that does nothing (GetModelInfo answering a constant). No server can answer a
 * call faster than this on the machine, so it splits the served overhead into what the
 * transport costs and what the server adds.
 *
 * Run as a child (`node dist-bench/bench/transport-floor.js serve`) it is the do-nothing server.
 */
import { fork } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { loadProtos } from '../server/src/grpc/proto';
import { compiledBenchModule } from './paths';
import { summarize, type LatencySummary } from './stats';

function serve(): void {
  const server = new grpc.Server();
  server.addService(loadProtos().embeddingService, {
    GetModelInfo: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { name: 'floor' }),
  });
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
    if (err) throw err;
    process.send!(port);
  });
  process.on('disconnect', () => server.forceShutdown());
}

export async function transportFloor(calls: number): Promise<LatencySummary> {
  const child = fork(compiledBenchModule('transport-floor'), ['serve'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (p) => resolve(p as number));
      child.once('exit', (code) => reject(new Error(`the transport-floor server exited with code ${code}`)));
    });
    const Client = grpc.makeGenericClientConstructor(loadProtos().embeddingService, 'EmbeddingService');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<
      string,
      (req: unknown, cb: (err: Error | null) => void) => void
    > &
      grpc.Client;
    const call = (): Promise<void> =>
      new Promise((resolve, reject) => client.GetModelInfo({}, (err) => (err ? reject(err) : resolve())));
    try {
      for (let i = 0; i < Math.min(200, calls); i++) await call();
      const samples: number[] = [];
      for (let i = 0; i < calls; i++) {
        const t0 = performance.now();
        await call();
        samples.push(performance.now() - t0);
      }
      return summarize(samples);
    } finally {
      client.close();
    }
  } finally {
    child.removeAllListeners('exit');
    child.disconnect();
    child.kill();
  }
}

if (require.main === module && process.argv[2] === 'serve') serve();
