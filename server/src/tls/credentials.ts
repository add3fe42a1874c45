/**
 * Server credentials from certificate files: plain TLS, or mutual TLS with a client CA. The files
 * are read and checked at start (a bad file stops the server with a message naming it); with a
 * reload interval, changes on disk are picked up without a restart through grpc-js's
 * certificate-provider credentials (see reloading-provider.ts).
 */
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ReloadObserver } from '../metrics/credentials-metrics';
import { checkIdentity, CertificateSummary, parseCertificates, TlsMaterialError } from './pem';
import { ReloadingCertificateProvider, TlsFiles } from './reloading-provider';

export interface TlsCredentialsOptions extends TlsFiles {
  /** Poll interval for certificate rotation; 0: the files are read once. */
  reloadIntervalMs: number;
  logger?: Logger;
  observer?: ReloadObserver;
}

export interface LoadedTlsFiles {
  certificate: Buffer;
  privateKey: Buffer;
  clientCa: Buffer | null;
  leaf: CertificateSummary;
}

/** Reads and checks the files; throws TlsMaterialError naming the flag and file at fault. */
export function loadTlsFiles(files: TlsFiles): LoadedTlsFiles {
  const read = (file: string, flag: string): Buffer => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new TlsMaterialError(`cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  const certificate = read(files.certFile, '--tls-cert');
  const privateKey = read(files.keyFile, '--tls-key');
  const clientCa = files.clientCaFile !== undefined ? read(files.clientCaFile, '--tls-client-ca') : null;
  const leaf = checkIdentity(certificate, privateKey, {
    cert: `--tls-cert ${files.certFile}`,
    key: `--tls-key ${files.keyFile}`,
  });
  if (clientCa) parseCertificates(clientCa, `--tls-client-ca ${files.clientCaFile}`);
  return { certificate, privateKey, clientCa, leaf };
}

export function createTlsServerCredentials(options: TlsCredentialsOptions): grpc.ServerCredentials {
  const loaded = loadTlsFiles(options);
  options.observer?.reloadSucceeded();
  const requireClientCert = loaded.clientCa !== null;
  options.logger?.info(
    { certificate: loaded.leaf, mtls: requireClientCert, reloadIntervalMs: options.reloadIntervalMs },
    'TLS certificate loaded',
  );
  if (options.reloadIntervalMs <= 0) {
    return grpc.ServerCredentials.createSsl(
      loaded.clientCa,
      [{ cert_chain: loaded.certificate, private_key: loaded.privateKey }],
      requireClientCert,
    );
  }
  const provider = new ReloadingCertificateProvider(options, {
    initial: {
      identity: { certificate: loaded.certificate, privateKey: loaded.privateKey },
      ca: loaded.clientCa ? { caCertificate: loaded.clientCa } : null,
    },
    refreshIntervalMs: options.reloadIntervalMs,
    logger: options.logger,
    observer: options.observer,
  });
  // grpc-js 1.14 declares this function's first parameter as the CA provider but hands it to the
  // credentials as the IDENTITY provider (and the second, nullable one, as the CA provider); the
  // types agree with that use. One provider serves both roles here, so only the null matters:
  // no client CA means no client-certificate verification.
  return grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    requireClientCert ? provider : null,
    requireClientCert,
  );
}
