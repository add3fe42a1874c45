/**
 * TLS and mutual TLS from files, rotated without a restart: grpc-js certificate-provider
 * credentials re-read the files; new connections get the new certificate; a half-written rotation
 * (certificate and key that do not match) or a broken client CA keeps the previous material
 * serving; bad files at start are refused naming the file.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import pino from 'pino';
import { RunningServer } from '../../../server/src/serve/server';
import { loadTlsFiles, TlsMaterialError } from '../../../server/src/tls';
import { HAVE_OPENSSL } from '../../helpers/openssl';
import { startTestServer } from '../../helpers/server';

type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const healthApi = grpc.loadPackageDefinition(
  protoLoader.loadSync(HEALTH_PROTO, { defaults: true, enums: String }),
) as Any;
const RELOAD_SECONDS = 0.1;

if (!HAVE_OPENSSL) console.warn('\n!!! SKIPPING TLS rotation tests: openssl not found !!!\n');

/** A throwaway PKI: CAs, and leaf certificates they sign (EC P-256: fast to make). */
class Pki {
  constructor(readonly dir: string) {}
  private ssl(...args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: 'pipe' });
  }
  private newKey(name: string): void {
    this.ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`);
  }
  ca(name: string): void {
    this.newKey(name);
    this.ssl(
      'req',
      '-x509',
      '-new',
      '-key',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    );
  }
  leaf(name: string, ca: string, serverName?: string): void {
    this.newKey(name);
    this.ssl('req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    const ext = path.join(this.dir, `${name}.ext`);
    fs.writeFileSync(
      ext,
      serverName ? `subjectAltName=DNS:${serverName},IP:127.0.0.1\n` : 'extendedKeyUsage=clientAuth\n',
    );
    this.ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.pem`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-extfile',
      ext,
    );
  }
  /** A leaf whose validity ended a day ago (openssl x509 takes a negative -days). */
  expiredLeaf(name: string, ca: string, serverName: string): void {
    this.newKey(name);
    this.ssl('req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    const ext = path.join(this.dir, `${name}.ext`);
    fs.writeFileSync(ext, `subjectAltName=DNS:${serverName},IP:127.0.0.1\n`);
    this.ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.pem`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '-1',
      '-extfile',
      ext,
    );
  }
  read(file: string): Buffer {
    return fs.readFileSync(path.join(this.dir, file));
  }
  /** Replaces `target` atomically (write aside, rename), as Secret volumes and cert tools do. */
  install(source: string, target: string): void {
    const tmp = path.join(this.dir, `.${target}.tmp`);
    fs.copyFileSync(path.join(this.dir, source), tmp);
    fs.renameSync(tmp, path.join(this.dir, target));
  }
  path(file: string): string {
    return path.join(this.dir, file);
  }
}

/** Health Check over a NEW channel (a new TLS handshake); resolves with the status code. */
function check(port: number, creds: grpc.ChannelCredentials): Promise<grpc.status> {
  const client = new healthApi.grpc.health.v1.Health(`127.0.0.1:${port}`, creds, {
    'grpc.ssl_target_name_override': 'localhost',
    'grpc.default_authority': 'localhost',
  });
  return new Promise<grpc.status>((resolve) =>
    client.Check({ service: '' }, { deadline: Date.now() + 3000 }, (err: grpc.ServiceError | null) =>
      resolve(err ? err.code : grpc.status.OK),
    ),
  ).finally(() => client.close());
}

async function eventually(what: string, probe: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

(HAVE_OPENSSL ? describe : describe.skip)('TLS files', () => {
  let pki: Pki;
  const logs: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write: (c, _e, cb) => (logs.push(String(c)), cb()) }));

  beforeAll(() => {
    pki = new Pki(fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-tls-rotate-')));
    pki.ca('ca1');
    pki.ca('ca2');
    pki.leaf('server1', 'ca1', 'localhost');
    pki.leaf('server2', 'ca2', 'localhost');
    pki.leaf('client1', 'ca1');
    pki.leaf('client2', 'ca2');
  });
  afterAll(() => fs.rmSync(pki.dir, { recursive: true, force: true }));

  test('bad files at start are refused, naming the flag and file', () => {
    expect(() => loadTlsFiles({ certFile: pki.path('server1.pem'), keyFile: pki.path('server2.key') })).toThrow(
      /--tls-key .*server2\.key is not the private key of --tls-cert .*server1\.pem/,
    );
    expect(() => loadTlsFiles({ certFile: pki.path('server1.key'), keyFile: pki.path('server1.key') })).toThrow(
      /--tls-cert .*server1\.key holds no PEM certificate/,
    );
    expect(() => loadTlsFiles({ certFile: pki.path('nope.pem'), keyFile: pki.path('server1.key') })).toThrow(
      /cannot read --tls-cert .*nope\.pem: ENOENT/,
    );
    fs.writeFileSync(
      pki.path('junk-ca.pem'),
      '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n',
    );
    expect(() =>
      loadTlsFiles({
        certFile: pki.path('server1.pem'),
        keyFile: pki.path('server1.key'),
        clientCaFile: pki.path('junk-ca.pem'),
      }),
    ).toThrow(TlsMaterialError);
  });

  test('an expired certificate is refused at start and never rotated in; the refusal is counted', async () => {
    pki.expiredLeaf('expired', 'ca1', 'localhost');
    expect(() => loadTlsFiles({ certFile: pki.path('expired.pem'), keyFile: pki.path('expired.key') })).toThrow(
      /--tls-cert .*expired\.pem expired on /,
    );
    pki.install('server1.pem', 'tls.crt');
    pki.install('server1.key', 'tls.key');
    const server: RunningServer = await startTestServer({
      logger,
      tlsCert: pki.path('tls.crt'),
      tlsKey: pki.path('tls.key'),
      credentialsReloadSeconds: RELOAD_SECONDS,
    });
    const errors = async () =>
      Number(
        /clipserve_credentials_reload_errors_total\{credential="tls"\} (\d+)/.exec(
          await server.metrics.registry.metrics(),
        )?.[1],
      );
    try {
      expect(await errors()).toBe(0);
      expect(await server.metrics.registry.metrics()).toMatch(
        /clipserve_credentials_last_reload_success_timestamp_seconds\{credential="tls"\} [1-9]/,
      );
      pki.install('expired.key', 'tls.key');
      pki.install('expired.pem', 'tls.crt');
      await eventually('the expired pair to be rejected', async () => (await errors()) > 0);
      expect(logs.join('')).toMatch(/expired on/);
      expect(await check(server.port, grpc.credentials.createSsl(pki.read('ca1.pem')))).toBe(grpc.status.OK);
    } finally {
      await server.shutdown(1);
      pki.install('server1.pem', 'tls.crt');
      pki.install('server1.key', 'tls.key');
      logs.length = 0; // the next cases look for their own rejections
    }
  });

  test('server certificate rotation: new connections get the new one; a mismatched pair is refused and the old one keeps serving', async () => {
    pki.install('server1.pem', 'tls.crt');
    pki.install('server1.key', 'tls.key');
    const server: RunningServer = await startTestServer({
      logger,
      tlsCert: pki.path('tls.crt'),
      tlsKey: pki.path('tls.key'),
      credentialsReloadSeconds: RELOAD_SECONDS,
    });
    const trusting = (ca: string) => grpc.credentials.createSsl(pki.read(`${ca}.pem`));
    try {
      expect(await check(server.port, trusting('ca1'))).toBe(grpc.status.OK);
      expect(await check(server.port, trusting('ca2'))).toBe(grpc.status.UNAVAILABLE);

      // Half a rotation: the new certificate is in place, its key is not yet.
      pki.install('server2.pem', 'tls.crt');
      await eventually('the mismatched pair to be rejected', async () =>
        logs.some((l) => l.includes('new TLS certificate rejected')),
      );
      expect(logs.join('')).toMatch(/is not the private key of/);
      await sleep(3 * RELOAD_SECONDS * 1000);
      expect(await check(server.port, trusting('ca1'))).toBe(grpc.status.OK);

      // The key follows: the pair is whole and takes effect without a restart.
      pki.install('server2.key', 'tls.key');
      await eventually(
        'the new certificate to serve',
        async () => (await check(server.port, trusting('ca2'))) === grpc.status.OK,
      );
      expect(await check(server.port, trusting('ca1'))).toBe(grpc.status.UNAVAILABLE);
      expect(logs.join('')).toMatch(/"msg":"TLS certificate reloaded"/);
      expect(logs.join('')).toMatch(/CN=server2/);

      // A file briefly missing changes nothing.
      fs.rmSync(pki.path('tls.key'));
      await sleep(3 * RELOAD_SECONDS * 1000);
      expect(await check(server.port, trusting('ca2'))).toBe(grpc.status.OK);
      pki.install('server2.key', 'tls.key');
    } finally {
      await server.shutdown(1);
    }
  });

  test('mutual TLS: client CA rotation; an unparseable CA bundle keeps the current one', async () => {
    pki.install('server1.pem', 'mtls.crt');
    pki.install('server1.key', 'mtls.key');
    pki.install('ca1.pem', 'client-ca.pem');
    const server = await startTestServer({
      logger,
      tlsCert: pki.path('mtls.crt'),
      tlsKey: pki.path('mtls.key'),
      tlsClientCa: pki.path('client-ca.pem'),
      credentialsReloadSeconds: RELOAD_SECONDS,
    });
    const as = (client?: string) =>
      client
        ? grpc.credentials.createSsl(pki.read('ca1.pem'), pki.read(`${client}.key`), pki.read(`${client}.pem`))
        : grpc.credentials.createSsl(pki.read('ca1.pem'));
    try {
      expect(await check(server.port, as('client1'))).toBe(grpc.status.OK);
      expect(await check(server.port, as())).toBe(grpc.status.UNAVAILABLE);
      expect(await check(server.port, as('client2'))).toBe(grpc.status.UNAVAILABLE);

      fs.copyFileSync(pki.path('junk-ca.pem'), pki.path('client-ca.pem'));
      await eventually('the junk CA to be rejected', async () =>
        logs.some((l) => l.includes('new TLS client CA rejected')),
      );
      expect(await check(server.port, as('client1'))).toBe(grpc.status.OK);

      pki.install('ca2.pem', 'client-ca.pem');
      await eventually(
        'clients of the new CA to be accepted',
        async () => (await check(server.port, as('client2'))) === grpc.status.OK,
      );
      expect(await check(server.port, as('client1'))).toBe(grpc.status.UNAVAILABLE);
    } finally {
      await server.shutdown(1);
    }
  });

  test('the HTTP API serves the same certificate, follows its rotation, and requires client certificates with a client CA', async () => {
    pki.install('server1.pem', 'https.crt');
    pki.install('server1.key', 'https.key');
    pki.install('ca1.pem', 'https-client-ca.pem');
    const server = await startTestServer({
      httpPort: 'auto',
      logger,
      tlsCert: pki.path('https.crt'),
      tlsKey: pki.path('https.key'),
      tlsClientCa: pki.path('https-client-ca.pem'),
      credentialsReloadSeconds: RELOAD_SECONDS,
    });
    /** GET /v1/models over a new HTTPS connection: the status, or the TLS failure's code. */
    const get = (ca: string, client?: string) =>
      new Promise<number | string>((resolve) => {
        const req = https.get(
          {
            host: '127.0.0.1',
            port: server.httpPort,
            path: '/v1/models',
            servername: 'localhost',
            agent: false,
            ca: pki.read(`${ca}.pem`),
            ...(client ? { key: pki.read(`${client}.key`), cert: pki.read(`${client}.pem`) } : {}),
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      });
    try {
      expect(await get('ca1', 'client1')).toBe(200);
      expect(await get('ca1', 'client2')).not.toBe(200);
      expect(await get('ca1')).not.toBe(200);
      expect(await get('ca2', 'client1')).not.toBe(200);

      pki.install('server2.pem', 'https.crt');
      pki.install('server2.key', 'https.key');
      await eventually('the HTTP API to serve the new certificate', async () => (await get('ca2', 'client1')) === 200);
      expect(await get('ca1', 'client1')).not.toBe(200);
    } finally {
      await server.shutdown(1);
    }
  });

  test('--credentials-reload-seconds 0 reads the files once', async () => {
    pki.install('server1.pem', 'once.crt');
    pki.install('server1.key', 'once.key');
    const server = await startTestServer({
      tlsCert: pki.path('once.crt'),
      tlsKey: pki.path('once.key'),
      credentialsReloadSeconds: 0,
    });
    try {
      pki.install('server2.pem', 'once.crt');
      pki.install('server2.key', 'once.key');
      await sleep(300);
      expect(await check(server.port, grpc.credentials.createSsl(pki.read('ca1.pem')))).toBe(grpc.status.OK);
    } finally {
      await server.shutdown(1);
    }
  });
});
