#!/usr/bin/env node
/**
 * The `clipserve` command line. Each subcommand lives in ./commands/<name>.ts and exports
 * `register(program)`; names and flags are a contract with scripts outside the repo.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { PACKAGE_ROOT } from '../util/paths';
import { register as registerTokenize } from './commands/tokenize';
import { register as registerInitModel } from './commands/init-model';
import { register as registerEmbed } from './commands/embed';
import { register as registerConvert } from './commands/convert';
import { register as registerPull } from './commands/pull';
import { register as registerEval } from './commands/eval';
import { register as registerServe } from './commands/serve';
import { register as registerBench } from './commands/bench';
import { register as registerFinetune } from './commands/finetune';

const { version } = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };

const program = new Command();
program.name('clipserve').description('OpenCLIP embedding service and tools').version(version);
// Root options (--version) only before the subcommand, so a subcommand may have its own --version.
program.enablePositionalOptions();

// Subcommands register themselves here, one line each.
registerTokenize(program);
registerInitModel(program);
registerEmbed(program);
registerConvert(program);
registerPull(program);
registerEval(program);
registerServe(program);
registerBench(program);
registerFinetune(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`clipserve: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
