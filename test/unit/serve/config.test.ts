/**
 * Server configuration: defaults, parsing and cross-checks, CLIPSERVE_* variables, --config files,
 * and `clipserve serve --help` documenting every option with its default.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import {
  ConfigError,
  configFromEnv,
  flagName,
  readConfigFile,
  resolveServeConfig,
  SERVE_OPTIONS,
} from '../../../server/src/serve/config';
import { compiledModule } from '../../../server/src/util/paths';

const run = promisify(execFile);

describe('serve configuration', () => {
  test('defaults match the documented ones', () => {
    const c = resolveServeConfig({});
    expect(c).toMatchObject({
      model: undefined,
      host: '0.0.0.0',
      port: 50051,
      metricsPort: 9090,
      httpPort: 8080,
      healthPort: undefined,
      provider: 'auto',
      maxBatchSize: 32,
      maxQueueDelayMs: 0,
      queueBound: 1024,
      maxItemsPerRequest: 256,
      maxTextChars: 16_384,
      shutdownGraceSeconds: 25,
      logLevel: 'info',
      tlsCert: undefined,
    });
    expect(path.isAbsolute(c.cacheDir)).toBe(true);
  });

  test('string values (flags, environment) are parsed and range-checked, naming the flag', () => {
    expect(resolveServeConfig({ port: '0', maxQueueDelayMs: '2.5', provider: 'cpu' })).toMatchObject({
      port: 0,
      maxQueueDelayMs: 2.5,
      provider: 'cpu',
    });
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ port: '70000' }, /--port must be an integer in \[0, 65535\]/],
      [{ port: 'abc' }, /--port must be an integer/],
      [{ maxBatchSize: 0 }, /--max-batch-size must be an integer in \[1,/],
      [{ provider: 'tpu' }, /--provider must be one of auto, cpu, cuda/],
      [{ logLevel: 'loud' }, /--log-level must be one of/],
      [{ maxQueueDelayMs: -1 }, /--max-queue-delay-ms must be a number/],
      [{ tlsCert: '/x.pem' }, /--tls-cert and --tls-key go together/],
      [{ tlsClientCa: '/ca.pem' }, /--tls-client-ca needs --tls-cert/],
      [{ maxItemsPerRequest: 2000 }, /--max-items-per-request \(2000\) exceeds --queue-bound \(1024\)/],
      [{ maxImageBytes: 100_000_000 }, /--max-image-bytes .* exceeds --max-message-bytes/],
      [{ port: 5000, healthPort: 5000 }, /--health-port must differ from --port/],
      [{ bogus: 1 }, /unknown option "bogus"/],
    ];
    for (const [input, message] of bad) expect(() => resolveServeConfig(input)).toThrow(message);
    expect(() => resolveServeConfig({ port: -1 })).toThrow(ConfigError);
  });

  test('CLIPSERVE_* variables map onto options; empty ones are ignored', () => {
    const env = {
      CLIPSERVE_PORT: '6000',
      CLIPSERVE_MAX_BATCH_SIZE: '8',
      CLIPSERVE_MODEL: '',
      CLIPSERVE_SHUTDOWN_GRACE_SECONDS: '3',
      HOME: '/root',
    };
    expect(configFromEnv(env)).toEqual({ port: '6000', maxBatchSize: '8', shutdownGraceSeconds: '3' });
    expect(resolveServeConfig(configFromEnv(env))).toMatchObject({
      port: 6000,
      maxBatchSize: 8,
      shutdownGraceSeconds: 3,
    });
    // Every option has its variable, named after its flag.
    for (const spec of SERVE_OPTIONS)
      expect(spec.env).toBe(`CLIPSERVE_${flagName(spec).toUpperCase().replace(/-/g, '_')}`);
  });

  test('--config JSON files take camelCase or flag names; paths are relative to the file; unknown keys fail', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-config-'));
    try {
      const file = path.join(dir, 'serve.json');
      fs.writeFileSync(
        file,
        JSON.stringify({
          'max-batch-size': 4,
          queueBound: 512,
          model: 'bundles/m1',
          tlsCert: '/abs/cert.pem',
          tlsKey: 'k.pem',
        }),
      );
      const values = readConfigFile(file);
      expect(values).toEqual({
        maxBatchSize: 4,
        queueBound: 512,
        model: path.join(dir, 'bundles/m1'),
        tlsCert: '/abs/cert.pem',
        tlsKey: path.join(dir, 'k.pem'),
      });
      expect(resolveServeConfig(values)).toMatchObject({ maxBatchSize: 4, queueBound: 512 });
      fs.writeFileSync(file, JSON.stringify({ model: 'hf-hub:org/repo' }));
      expect(readConfigFile(file)).toEqual({ model: 'hf-hub:org/repo' });
      fs.writeFileSync(file, JSON.stringify({ maxBatchSise: 4 }));
      expect(() => readConfigFile(file)).toThrow(/unknown option "maxBatchSise"/);
      fs.writeFileSync(file, '[1, 2]');
      expect(() => readConfigFile(file)).toThrow(/must hold a JSON object/);
      fs.writeFileSync(file, '{ not json');
      expect(() => readConfigFile(file)).toThrow(/cannot read config file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('`clipserve serve --help` documents every option, its variable and its default', async () => {
    const { stdout } = await run(process.execPath, [compiledModule('cli/main'), 'serve', '--help'], {
      env: { ...process.env, COLUMNS: '400' },
    });
    const help = stdout.replace(/\s+/g, ' ');
    expect(help).toContain('--config <file>');
    for (const spec of SERVE_OPTIONS) {
      expect(help).toContain(spec.flag);
      expect(help).toContain(spec.env);
      if (spec.defaultValue !== undefined) expect(help).toContain(`default: ${JSON.stringify(spec.defaultValue)}`);
      else expect(spec.description).toMatch(/\(default: |mutual TLS|private key/);
    }
  });
});
