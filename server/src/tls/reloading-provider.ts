/**
 * A grpc-js CertificateProvider for certificate files that change on disk (rotation without a
 * restart): grpc-js's own FileWatcherCertificateProvider polls the files, and this wrapper passes
 * on only material that TLS can load. What it guards against:
 *  - a rotation caught half-way (new certificate, old key): grpc-js would fail setSecureContext and
 *    then DROP EVERY NEW CONNECTION until the next poll; here the previous pair keeps serving;
 *  - a file briefly missing (Secret volume update, a deploy tool's rename): the watcher reports
 *    null, which grpc-js also turns into refused connections; here it is ignored;
 *  - an unchanged re-read: not re-applied and not logged;
 *  - an expired (or not yet valid) certificate: refused like a broken one (checkIdentity).
 * Each applied change and each rejected one is logged with the certificate's subject and expiry,
 * and counted by `observer` (clipserve_credentials_reload_errors_total{credential="tls"}).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ReloadObserver } from '../metrics/credentials-metrics';
import { checkIdentity, parseCertificates, summarize } from './pem';

type CertificateProvider = grpc.experimental.CertificateProvider;
type IdentityUpdate = grpc.experimental.IdentityCertificateUpdate;
type CaUpdate = grpc.experimental.CaCertificateUpdate;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** PEM CA bundle that client certificates must chain to (mutual TLS). */
  clientCaFile?: string;
}

export interface ReloadingProviderOptions {
  /** Already-checked contents of the files at start (see loadTlsFiles). */
  initial: { identity: IdentityUpdate; ca: CaUpdate | null };
  refreshIntervalMs: number;
  logger?: Logger;
  observer?: ReloadObserver;
}

export class ReloadingCertificateProvider implements CertificateProvider {
  private readonly watcher: grpc.experimental.FileWatcherCertificateProvider;
  private identity: IdentityUpdate;
  private ca: CaUpdate | null;
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly caListeners = new Set<CaListener>();
  private subscribed = false;
  private readonly onWatchedIdentity = (u: IdentityUpdate | null) => this.receiveIdentity(u);
  private readonly onWatchedCa = (u: CaUpdate | null) => this.receiveCa(u);

  constructor(
    private readonly files: TlsFiles,
    private readonly options: ReloadingProviderOptions,
  ) {
    this.identity = options.initial.identity;
    this.ca = options.initial.ca;
    this.watcher = new grpc.experimental.FileWatcherCertificateProvider({
      certificateFile: files.certFile,
      privateKeyFile: files.keyFile,
      caCertificateFile: files.clientCaFile,
      refreshIntervalMs: options.refreshIntervalMs,
    });
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    this.syncSubscription();
    process.nextTick(listener, this.identity);
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
    this.syncSubscription();
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    this.syncSubscription();
    if (this.ca) process.nextTick(listener, this.ca);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
    this.syncSubscription();
  }

  /** Watches the files while anyone listens (grpc-js removes its listeners when the server closes, which stops the polling). */
  private syncSubscription(): void {
    const wanted = this.identityListeners.size + this.caListeners.size > 0;
    if (wanted === this.subscribed) return;
    this.subscribed = wanted;
    if (wanted) {
      this.watcher.addIdentityCertificateListener(this.onWatchedIdentity);
      if (this.files.clientCaFile !== undefined) this.watcher.addCaCertificateListener(this.onWatchedCa);
    } else {
      this.watcher.removeIdentityCertificateListener(this.onWatchedIdentity);
      if (this.files.clientCaFile !== undefined) this.watcher.removeCaCertificateListener(this.onWatchedCa);
    }
  }

  private receiveIdentity(update: IdentityUpdate | null): void {
    const log = this.options.logger;
    if (update === null) {
      this.options.observer?.reloadFailed();
      log?.warn(
        { cert: this.files.certFile, key: this.files.keyFile },
        'TLS certificate or key unreadable: keeping the current one',
      );
      return;
    }
    if (update.certificate.equals(this.identity.certificate) && update.privateKey.equals(this.identity.privateKey)) {
      this.options.observer?.reloadSucceeded();
      return;
    }
    let leaf;
    try {
      leaf = checkIdentity(update.certificate, update.privateKey, {
        cert: this.files.certFile,
        key: this.files.keyFile,
      });
    } catch (err) {
      this.options.observer?.reloadFailed();
      log?.error(
        { reason: err instanceof Error ? err.message : String(err) },
        'new TLS certificate rejected: keeping the current one',
      );
      return;
    }
    this.options.observer?.reloadSucceeded();
    this.identity = update;
    log?.info({ certificate: leaf }, 'TLS certificate reloaded');
    for (const l of this.identityListeners) l(update);
  }

  private receiveCa(update: CaUpdate | null): void {
    const log = this.options.logger;
    const file = this.files.clientCaFile;
    if (update === null) {
      log?.warn({ file }, 'TLS client CA unreadable: keeping the current one');
      return;
    }
    if (this.ca && update.caCertificate.equals(this.ca.caCertificate)) return;
    let certs;
    try {
      certs = parseCertificates(update.caCertificate, `--tls-client-ca ${file}`);
    } catch (err) {
      log?.error(
        { reason: err instanceof Error ? err.message : String(err) },
        'new TLS client CA rejected: keeping the current one',
      );
      return;
    }
    this.ca = update;
    log?.info({ certificates: certs.map(summarize) }, 'TLS client CA reloaded');
    for (const l of this.caListeners) l(update);
  }
}
