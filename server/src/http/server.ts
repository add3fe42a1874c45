/**
 * Puts the HTTP API on its port (--http-port), with the gRPC server's TLS files: the same
 * certificate and key, mutual TLS with the same client CA, and the same rotation without a restart
 * (the gRPC side's ReloadingCertificateProvider watches the files and passes on only pairs that
 * load; each one becomes the HTTPS server's secure context).
 */
import type * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { loadTlsFiles, ReloadingCertificateProvider, type TlsFiles } from '../tls';
import { buildHttpApp } from './app';
import type { HttpApiDeps } from './deps';

export interface HttpApiOptions {
  host: string;
  /** A port, or 0 for any free one. */
  port: number;
  bodyLimit: number;
  tls?: TlsFiles & { reloadIntervalMs: number };
}

export interface RunningHttpApi {
  readonly port: number;
  /**
   * Stops accepting and closes idle keep-alive connections, then waits for the requests in flight;
   * `cut`: closes their connections too (the grace period is over), which cancels their items.
   */
  close(cut?: boolean): Promise<void>;
}

export async function startHttpApi(deps: HttpApiDeps, options: HttpApiOptions): Promise<RunningHttpApi> {
  const tls = options.tls ? tlsOptions(options.tls, deps.logger) : undefined;
  const app = await buildHttpApp(deps, { bodyLimit: options.bodyLimit, https: tls?.serverOptions });
  try {
    await app.listen({ host: options.host, port: options.port });
  } catch (err) {
    await app.close();
    throw new Error(
      `cannot listen on ${options.host}:${options.port} (--http-port): ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const stopReloading = tls?.watch(app.server as https.Server);
  return {
    port: (app.server.address() as AddressInfo).port,
    close: async (cut = false) => {
      stopReloading?.();
      const closing = app.close();
      if (cut) app.server.closeAllConnections();
      await closing;
    },
  };
}

function tlsOptions(files: TlsFiles & { reloadIntervalMs: number }, logger: Logger) {
  const loaded = loadTlsFiles(files);
  const serverOptions: https.ServerOptions = {
    cert: loaded.certificate,
    key: loaded.privateKey,
    ...(loaded.clientCa ? { ca: loaded.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
  };
  /** Applies rotated files to `server` until the returned function is called. */
  const watch = (server: https.Server): (() => void) | undefined => {
    if (files.reloadIntervalMs <= 0) return undefined;
    const provider = new ReloadingCertificateProvider(files, {
      initial: {
        identity: { certificate: loaded.certificate, privateKey: loaded.privateKey },
        ca: loaded.clientCa ? { caCertificate: loaded.clientCa } : null,
      },
      refreshIntervalMs: files.reloadIntervalMs,
      logger: logger.child({ listener: 'http' }),
    });
    let current = { cert: loaded.certificate, key: loaded.privateKey, ca: loaded.clientCa ?? undefined };
    const apply = (next: Partial<typeof current>) => {
      current = { ...current, ...next };
      server.setSecureContext({ cert: current.cert, key: current.key, ...(current.ca ? { ca: current.ca } : {}) });
    };
    const onIdentity = (u: { certificate: Buffer; privateKey: Buffer } | null) =>
      u && apply({ cert: u.certificate, key: u.privateKey });
    const onCa = (u: { caCertificate: Buffer } | null) => u && apply({ ca: u.caCertificate });
    provider.addIdentityCertificateListener(onIdentity);
    if (loaded.clientCa) provider.addCaCertificateListener(onCa);
    return () => {
      provider.removeIdentityCertificateListener(onIdentity);
      if (loaded.clientCa) provider.removeCaCertificateListener(onCa);
    };
  };
  return { serverOptions, watch };
}
