import { execFileSync } from 'node:child_process';

/** Whether the openssl CLI (which the TLS suites use to make their test PKI) is installed. */
export const HAVE_OPENSSL = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
