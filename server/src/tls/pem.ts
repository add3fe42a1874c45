/**
 * Checks of PEM material before it is handed to TLS: a certificate chain that matches its private
 * key, and a CA bundle made only of parseable certificates. Node's own loaders are lenient about
 * CA bundles (garbage is silently ignored, which would make mutual TLS refuse every client), so
 * each block is parsed here.
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';

/** PEM material that cannot be used; the message says which and why. */
export class TlsMaterialError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsMaterialError';
  }
}

export interface CertificateSummary {
  subject: string;
  issuer: string;
  validTo: string;
  fingerprint256: string;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The certificates of a PEM bundle, parsed; throws when it holds none or a broken one. */
export function parseCertificates(pem: Buffer, what: string): X509Certificate[] {
  const blocks = pem.toString('latin1').match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new TlsMaterialError(`${what} holds no PEM certificate`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new TlsMaterialError(
        `${what}: certificate ${i + 1} does not parse: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  });
}

/**
 * Checks a certificate chain and key the way the TLS server will load them, and that the leaf is
 * valid now (an expired or not-yet-valid certificate makes every client refuse the server, so it
 * is refused at start and never rotated in); returns the leaf.
 */
export function checkIdentity(
  certChain: Buffer,
  privateKey: Buffer,
  what: { cert: string; key: string },
  now = new Date(),
): CertificateSummary {
  const [leaf] = parseCertificates(certChain, what.cert);
  if (new Date(leaf.validTo).getTime() <= now.getTime())
    throw new TlsMaterialError(`${what.cert} expired on ${leaf.validTo}`);
  if (new Date(leaf.validFrom).getTime() > now.getTime())
    throw new TlsMaterialError(`${what.cert} is not valid before ${leaf.validFrom}`);
  try {
    tls.createSecureContext({ cert: certChain, key: privateKey });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new TlsMaterialError(
      /mismatch/i.test(reason)
        ? `${what.key} is not the private key of ${what.cert}`
        : `${what.cert} / ${what.key}: ${reason}`,
    );
  }
  return summarize(leaf);
}

export function summarize(cert: X509Certificate): CertificateSummary {
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
    validTo: cert.validTo,
    fingerprint256: cert.fingerprint256,
  };
}
