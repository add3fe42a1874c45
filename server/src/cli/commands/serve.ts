/**
 * `clipserve serve`: runs the gRPC embedding server until SIGTERM/SIGINT, then drains (health
 * NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within --shutdown-grace-seconds) and
 * exits 0. A second signal during the drain exits at once with status 1.
 *
 * Every flag is generated from SERVE_OPTIONS (server/src/serve/config.ts), so flags, CLIPSERVE_*
 * variables and --config keys always agree. The bound port is logged as
 * {"msg":"grpc server listening","port":N}; readiness as {"msg":"model ready: serving"}.
 */
import { Command, Option } from 'commander';
import { ConfigError, flagName, readConfigFile, SERVE_OPTIONS, ServeConfig } from '../../serve/config';
import { startServer } from '../../serve/server';

export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description('serve the embedding gRPC API (precedence: flag > CLIPSERVE_* environment > --config file > default)')
    .addOption(
      new Option(
        '--config <file>',
        'JSON file of options, keyed by option name ("maxBatchSize" or "max-batch-size")',
      ).env('CLIPSERVE_CONFIG'),
    );
  for (const spec of SERVE_OPTIONS) {
    const opt = new Option(spec.flag, spec.description).env(spec.env);
    if (spec.defaultValue !== undefined) opt.default(spec.defaultValue);
    cmd.addOption(opt);
  }
  cmd.action(async (_opts: Record<string, unknown>, command: Command) => {
    await serve(gatherConfig(command));
  });
}

/** Flag and environment values (commander tells which is which) over the config file's. */
function gatherConfig(command: Command): Partial<Record<keyof ServeConfig, unknown>> {
  const configFile = command.getOptionValue('config') as string | undefined;
  const merged: Partial<Record<keyof ServeConfig, unknown>> = configFile ? readConfigFile(configFile) : {};
  for (const spec of SERVE_OPTIONS) {
    const source = command.getOptionValueSource(spec.key);
    if (source === 'cli' && spec.secret) {
      throw new ConfigError(
        `--${flagName(spec)} is not accepted on the command line (other users can read it from the process list): use ${spec.env} or a file`,
      );
    }
    if (source === 'cli' || source === 'env') merged[spec.key] = command.getOptionValue(spec.key);
  }
  return merged;
}

async function serve(configInput: Partial<Record<keyof ServeConfig, unknown>>): Promise<void> {
  const running = await startServer({ ...configInput, waitUntilReady: false });
  const log = running.logger;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, 'second signal during drain: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down');
    running.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await running.ready;
  } catch (err) {
    // Already logged by the server; a server without a model cannot serve.
    await running.shutdown(0);
    throw err;
  }
}
