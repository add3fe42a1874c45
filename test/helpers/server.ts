/**
 * The in-process server of the e2e suites: the real startServer on 127.0.0.1 with ephemeral ports
 * (gRPC, metrics; the HTTP API off unless asked for), the tiny demo model from the test cache every
 * server suite shares, and a silent logger. A test passes only what it is about (a keys file, TLS
 * files, a batch size); everything else is the same block the suites used to copy.
 * For `clipserve serve` as a child process, see server-process.ts.
 */
import pino from 'pino';
import { startServer, type RunningServer, type StartServerConfig } from '../../server/src/serve/server';
import { TEST_CACHE_DIR } from './server-process';

export type { RunningServer } from '../../server/src/serve/server';
export { TEST_CACHE_DIR } from './server-process';

/** A logger that writes nothing: the suites assert on metrics, responses and their own log sinks. */
export const SILENT_LOGGER = pino({ level: 'silent' });

/** What every loopback test server has in common; `options` override any of it. */
export const LOOPBACK_SERVER = {
  host: '127.0.0.1',
  port: 0,
  metricsPort: 0,
  httpPort: 0,
  cacheDir: TEST_CACHE_DIR,
} as const;

/** Starts the real server on loopback (demo model unless `options.model` names a bundle). */
export function startTestServer(options: StartServerConfig = {}): Promise<RunningServer> {
  return startServer({ ...LOOPBACK_SERVER, logger: SILENT_LOGGER, ...options });
}

/** Runs `body` against a fresh test server and always shuts it down (1 s grace), pass or fail. */
export async function withTestServer<T>(
  options: StartServerConfig,
  body: (server: RunningServer) => Promise<T>,
): Promise<T> {
  const server = await startTestServer(options);
  try {
    return await body(server);
  } finally {
    await server.shutdown(1);
  }
}
