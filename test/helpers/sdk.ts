/**
 * Support for the SDK suites (test/e2e/sdk/, test/unit/sdk/): building the sdk package, loading its compiled
 * output, a test certificate authority made with openssl, real clipserve servers in child
 * processes, and a grpc-js proxy that fails the first attempts of each call.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type * as Sdk from '../../sdk/src/index';

export type SdkModule = typeof Sdk;

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const SDK_DIR = path.join(REPO_ROOT, 'sdk');

function newestMtime(p: string): number {
  if (!fs.existsSync(p)) return 0;
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of fs.readdirSync(p)) newest = Math.max(newest, newestMtime(path.join(p, e)));
  return newest;
}

/** Builds sdk/dist when it is missing or older than its sources (sdk/src, sdk/scripts, proto/). */
export function ensureSdkBuilt(): void {
  // sdk/ is a workspace of the repository: the root `npm ci` installs its dependencies (hoisted).
  for (const dep of ['@grpc/grpc-js', 'typescript/package.json', 'protobufjs']) {
    try {
      require.resolve(dep, { paths: [SDK_DIR] });
    } catch {
      throw new Error(`${dep} is not installed for sdk/: run "npm ci" at the repository root`);
    }
  }
  const built = path.join(SDK_DIR, 'dist', 'cjs', 'index.js');
  const builtAt = fs.existsSync(built) ? fs.statSync(built).mtimeMs : 0;
  const srcNewest = Math.max(
    newestNonGenerated(path.join(SDK_DIR, 'src')),
    ...['scripts', 'package.json', 'tsconfig.json', 'tsconfig.esm.json', 'tsconfig.cjs.json', 'proto/grpc'].map((p) =>
      newestMtime(path.join(SDK_DIR, p)),
    ),
    newestMtime(path.join(REPO_ROOT, 'proto', 'clipserve')),
  );
  if (builtAt === 0 || srcNewest > builtAt) {
    withBuildLock(() => {
      // Another jest worker may have built it while this one waited for the lock.
      const now = fs.existsSync(built) ? fs.statSync(built).mtimeMs : 0;
      if (now === 0 || srcNewest > now) execFileSync('npm', ['--prefix', SDK_DIR, 'run', 'build'], { stdio: 'pipe' });
    });
  }
}

/** Serializes builds across jest workers: mkdir is atomic; a lock older than 5 minutes is stale. */
function withBuildLock(fn: () => void): void {
  const lock = path.join(SDK_DIR, '.build-lock');
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (Date.now() - fs.statSync(lock).mtimeMs > 300_000) fs.rmSync(lock, { recursive: true, force: true });
      else Atomics.wait(sleeper, 0, 0, 200);
    }
  }
  try {
    fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

/** Like newestMtime, minus src/generated (written by the build itself). */
function newestNonGenerated(src: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(src)) {
    if (e === 'generated') continue;
    newest = Math.max(newest, newestMtime(path.join(src, e)));
  }
  return newest;
}

/** The compiled CommonJS build, as a package consumer sees it. */
export function loadSdk(): SdkModule {
  ensureSdkBuilt();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(SDK_DIR, 'dist', 'cjs', 'index.js')) as SdkModule;
}

type SdkError = InstanceType<SdkModule['ClipServeError']>;

/** The ClipServeError a call fails with (the test fails if it succeeds or throws anything else). */
export async function rejection(p: Promise<unknown>): Promise<SdkError> {
  const { ClipServeError } = loadSdk();
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ClipServeError);
    return err as SdkError;
  }
  throw new Error('expected the call to fail');
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `clipserve-${prefix}-`));
}

// ------------------------------------------------------------------------------------------ TLS

export interface TlsFixtures {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A second, unrelated CA: a client trusting only it must refuse the server. */
  otherCaCert: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

/** A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate, all made by openssl. */
export function makeTlsFixtures(dir = tempDir('tls')): TlsFixtures {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string): void =>
    openssl(
      [
        'req',
        '-x509',
        ...ec,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-subj',
        `/CN=${name}`,
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      dir,
    );
  ca('ca');
  ca('other-ca');
  const leaf = (name: string, ext: string): void => {
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        '-days',
        '2',
        '-extfile',
        `${name}.ext`,
      ],
      dir,
    );
  };
  leaf('server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  leaf('client', 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n');
  const p = (f: string): string => path.join(dir, f);
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    otherCaCert: p('other-ca.crt'),
  };
}

// ---------------------------------------------------------------------------------- retry proxy

export interface FlakyProxy {
  address: string;
  /** Attempts seen per method name. */
  attempts: Map<string, number>;
  /** The metadata of every attempt, in arrival order. */
  seenMetadata: grpc.Metadata[];
  close(): Promise<void>;
}

export interface FlakyProxyOptions {
  /** Every call fails its first `failFirst` attempts with `code`, then is forwarded. */
  failFirst: number;
  code: grpc.status;
  /** Delay before answering each attempt (ms), to exercise deadlines and aborts. */
  delayMs?: number;
}

/**
 * A grpc-js server on 127.0.0.1 that speaks clipserve.v1.EmbeddingService (from the proto shipped
 * in the sdk) and forwards unary calls to a real server, after failing the first attempts of each
 * distinct call. Each attempt is identified by its request bytes, so concurrent calls are counted
 * apart.
 */
export async function startFlakyProxy(backend: string, opts: FlakyProxyOptions): Promise<FlakyProxy> {
  const def = protoLoader.loadSync('clipserve/v1/embedding.proto', { includeDirs: [path.join(SDK_DIR, 'proto')] });
  const service = def['clipserve.v1.EmbeddingService'] as grpc.ServiceDefinition;
  const Client = grpc.makeGenericClientConstructor(service, 'EmbeddingService');
  const upstream = new Client(backend, grpc.credentials.createInsecure());
  const attempts = new Map<string, number>();
  const perCall = new Map<string, number>();
  const seenMetadata: grpc.Metadata[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(service)) {
    if (method.requestStream || method.responseStream) continue;
    handlers[name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      attempts.set(name, (attempts.get(name) ?? 0) + 1);
      seenMetadata.push(call.metadata);
      const key = `${name}:${(method.requestSerialize(call.request) as Buffer).toString('base64')}`;
      const n = (perCall.get(key) ?? 0) + 1;
      perCall.set(key, n);
      const answer = (): void => {
        if (n <= opts.failFirst) {
          callback({ code: opts.code, details: `flaky proxy: attempt ${n} refused` });
          return;
        }
        const md = call.metadata.clone();
        (
          upstream as unknown as Record<
            string,
            (r: unknown, m: grpc.Metadata, cb: grpc.requestCallback<unknown>) => void
          >
        )[name](call.request, md, (err, res) => {
          if (err) callback(err);
          else callback(null, res);
        });
      };
      if (opts.delayMs) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          answer();
        }, opts.delayMs);
        timers.add(timer);
      } else {
        answer();
      }
    };
  }
  const server = new grpc.Server();
  server.addService(service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    address: `127.0.0.1:${port}`,
    attempts,
    seenMetadata,
    close: async () => {
      // Delayed answers still pending would otherwise fire into a closed channel.
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.forceShutdown();
      upstream.close();
    },
  };
}

// ------------------------------------------------------------------------------ real servers

export interface ClipServerProcess {
  /** host:port of the gRPC server on 127.0.0.1. */
  address: string;
  port: number;
  child: ChildProcess;
  /** Everything the server wrote, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

export interface ClipServerOptions {
  tls?: { cert: string; key: string; clientCa?: string };
  /** Extra `clipserve serve` flags. */
  args?: string[];
}

/** The demo bundle is built once here and shared by every SDK suite (and across runs). */
export const SERVER_CACHE_DIR = path.join(REPO_ROOT, '.cache', 'sdk-tests');

/**
 * Servers a suite forgot (or could not) stop must neither keep jest from exiting nor outlive it:
 * children do not hold the event loop open, and whatever is still running when the test process
 * exits is killed.
 */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function trackChild(child: ChildProcess): void {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of liveChildren) c.kill('SIGKILL');
    });
  }
}

/** Starts several servers at once; if any fails, the others are stopped before the error is thrown. */
export async function startClipServers(options: ClipServerOptions[]): Promise<ClipServerProcess[]> {
  const settled = await Promise.allSettled(options.map((o) => startClipServer(o)));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(settled.map((r) => (r.status === 'fulfilled' ? r.value.stop() : Promise.resolve())));
    throw failed.reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<ClipServerProcess>).value);
}

interface LogLine {
  msg?: string;
  port?: number;
}

/**
 * Starts `clipserve serve` (compiled CLI in dist/, built by `npm test`) on 127.0.0.1 with ports 0,
 * the demo model and one inference thread, and resolves once it logs that the model is serving.
 * The port is read from its JSON log ({"msg":"grpc server listening","port":N}); the metrics port
 * is 0 too, so parallel servers never collide.
 */
export async function startClipServer(opts: ClipServerOptions = {}): Promise<ClipServerProcess> {
  const cli = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" first`);
  const args = [
    cli,
    'serve',
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--metrics-port',
    '0',
    '--http-port',
    '0',
    '--cache-dir',
    SERVER_CACHE_DIR,
    '--intra-op-threads',
    '1',
    '--preprocess-workers',
    '1',
    '--shutdown-grace-seconds',
    '1',
    '--log-level',
    'info',
  ];
  if (opts.tls) {
    args.push('--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key);
    if (opts.tls.clientCa) args.push('--tls-client-ca', opts.tls.clientCa);
  }
  args.push(...(opts.args ?? []));
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'test' },
  });
  trackChild(child);
  let output = '';
  let port: number | undefined;
  let exited = false;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`clipserve serve did not become ready in 150 s:\n${output}`)),
      150_000,
    );
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        let rec: LogLine;
        try {
          rec = JSON.parse(line) as LogLine;
        } catch {
          continue;
        }
        if (typeof rec.port === 'number' && rec.msg?.startsWith('grpc server listening')) port = rec.port;
        if (rec.msg?.startsWith('model ready') && port !== undefined) {
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code, signal) => {
      exited = true;
      clearTimeout(timer);
      reject(new Error(`clipserve serve exited (${code ?? signal}) before it was ready:\n${output}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    if (!exited) child.kill('SIGKILL');
    throw err;
  }
  const stop = async (): Promise<void> => {
    if (exited || child.exitCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  };
  return { address: `127.0.0.1:${port!}`, port: port!, child, output: () => output, stop };
}
