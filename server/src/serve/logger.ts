import pino from 'pino';
import type { Logger } from 'pino';
import type { LogLevel } from './config';

/**
 * The server's structured JSON logger on stdout. Synchronous writes: a process that exits right
 * after shutdown (SIGTERM) must not lose its last lines, and log volume is per call, not per item.
 */
export function createLogger(level: LogLevel): Logger {
  return pino(
    {
      level,
      base: { service: 'clipserve', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Never log request payloads: handlers log ids, counts and codes only.
      redact: { paths: ['req.body', 'request', 'texts', 'images'], remove: true },
    },
    pino.destination({ dest: 1, sync: true }),
  );
}
