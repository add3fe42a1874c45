/** TLS and mutual TLS server credentials from files, reloaded when the files change. */
export { createTlsServerCredentials, loadTlsFiles } from './credentials';
export type { LoadedTlsFiles, TlsCredentialsOptions } from './credentials';
export { checkIdentity, parseCertificates, TlsMaterialError } from './pem';
export type { CertificateSummary } from './pem';
export { ReloadingCertificateProvider } from './reloading-provider';
export type { TlsFiles } from './reloading-provider';
