/**
 * `clipserve finetune …`: the FineTuneService and ModelService RPCs from the command line.
 *
 *   upload <csv|zip> [--name N]          pairs of a local CSV (images streamed with their captions)
 *                                        or a zip archive; --remote-csv uploads a CSV whose paths
 *                                        are inside the server's data directory
 *   create --training-file <id|path> [hyperparameter flags] [--watch]
 *   get <job> | list [--limit N] | cancel <job> | watch <job>
 *   models list | models activate <version>
 *
 * Connection: --server host:port (CLIPSERVE_SERVER, default localhost:50051), --tls with optional
 * --ca-cert; an API key only from CLIPSERVE_API_KEY (never on the command line, where other users
 * can read it), sent as "authorization: Bearer <key>". Progress bars go to stderr (terminals
 * only); results to stdout, as tables or, with --json, as JSON (./finetune-output).
 *
 * The calls go through the SDK's `fineTunes` / `models` clients (@clipserve/sdk, a workspace
 * package): one FineTuneService client for the SDK and the CLI.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ClipClient,
  ClipServeError,
  type Dataset,
  type FineTuneHyperparameters,
  type FineTuneJob,
} from '@clipserve/sdk';
import { Command, Option } from 'commander';
import { PhaseProgress } from '../../checkpoint/progress';
import { readCsvDataset } from '../../dataset/csv';
import { csvColumnOptions, csvColumns, type CsvColumnFlags } from '../csv-options';
import {
  activateJson,
  datasetJson,
  datasetTable,
  jobDetails,
  jobJson,
  jobTable,
  modelListJson,
  modelTable,
  type DatasetJson,
} from './finetune-output';

export { formatTable, metricsTable } from './finetune-output';

interface ConnFlags {
  server: string;
  tls?: boolean;
  caCert?: string;
  json?: boolean;
}

interface CreateFlags extends ConnFlags, Record<string, unknown> {
  trainingFile: string;
  validationFile?: string;
  method: 'adapter' | 'full';
  baseModel?: string;
  suffix?: string;
  watch?: boolean;
}

const MAX_MESSAGE_BYTES = 64 << 20;

/**
 * A client for one command: no default deadline (activating or uploading may take minutes); one
 * server, so pick_first, as a plain grpc-js channel. The SDK's retries stay on: reads are retried
 * on UNAVAILABLE and a watch resumes after a server restart.
 */
function connect(f: ConnFlags): ClipClient {
  return new ClipClient({
    address: f.server,
    loadBalancing: 'pick_first',
    tls: f.tls ? (f.caCert ? { ca: fs.readFileSync(f.caCert) } : true) : false,
    apiKey: process.env.CLIPSERVE_API_KEY || undefined,
    defaultTimeoutMs: 0,
    maxSendMessageBytes: MAX_MESSAGE_BYTES,
    maxReceiveMessageBytes: MAX_MESSAGE_BYTES,
  });
}

/** Runs one SDK call; a server error reads "Method: CODE: details", as the command has always printed it. */
async function rpc<T>(method: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ClipServeError) throw new Error(`${method}: ${err.codeName}: ${err.details}`);
    throw err;
  }
}

/** Runs a command's body with a client, closed at the end. */
async function withClient<T>(f: ConnFlags, body: (client: ClipClient) => Promise<T>): Promise<T> {
  const client = connect(f);
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

function print(f: ConnFlags, value: unknown, text: string): void {
  process.stdout.write(f.json ? JSON.stringify(value, null, 2) + '\n' : text);
}

/** The first `--limit` items of a paged list call, newest first. */
async function firstItems<T>(
  f: { limit: string },
  maxPage: number,
  page: (pageSize: number, pageToken: string | undefined) => Promise<{ items: T[]; nextPageToken?: string }>,
): Promise<T[]> {
  const limit = Number(f.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit must be a positive integer, got "${f.limit}"`);
  const items: T[] = [];
  let pageToken: string | undefined;
  do {
    const p = await page(Math.min(maxPage, limit - items.length), pageToken);
    items.push(...p.items);
    pageToken = p.nextPageToken;
  } while (pageToken && items.length < limit);
  return items;
}

/** Streams a job's events with a step progress bar until it ends; resolves with the final job. */
async function watchJob(client: ClipClient, jobId: string): Promise<FineTuneJob> {
  const bar = new PhaseProgress();
  try {
    await rpc('WatchFineTuneJob', async () => {
      let lastPhase = '';
      for await (const e of client.fineTunes.watch(jobId)) {
        if (e.type === 'step') bar.update('training (steps)', e.step, Number(e.data.total_steps ?? e.step), 'items');
        else if (e.type === 'state' || e.type === 'epoch' || e.type === 'log') {
          if (e.type === 'state') lastPhase = e.state ?? 'unspecified';
          if (!process.stderr.isTTY || e.type !== 'epoch')
            process.stderr.write(`[${lastPhase || 'job'}] ${e.message}\n`);
        }
      }
    });
  } finally {
    bar.stop();
  }
  return rpc('GetFineTuneJob', () => client.fineTunes.get(jobId));
}

/** Image–caption pairs of a local CSV, each image read as the upload reaches it. */
async function* csvPairs(
  pairs: { image: string; caption: string }[],
  failed: (err: Error) => void,
): AsyncGenerator<{ image: Buffer; caption: string }> {
  for (let i = 0; i < pairs.length; i++) {
    let image: Buffer;
    try {
      image = fs.readFileSync(pairs[i].image);
    } catch (err) {
      const local = new Error(`row ${i + 1}: cannot read ${pairs[i].image}: ${(err as Error).message}`);
      failed(local);
      throw local;
    }
    yield { image, caption: pairs[i].caption };
  }
}

/** Uploads a local CSV's pairs, or a zip / a CSV naming server-side files, with a progress bar. */
async function uploadFile(
  client: ClipClient,
  file: string,
  f: CsvColumnFlags & { name?: string; remoteCsv?: boolean },
): Promise<Dataset> {
  const csv = csvColumns(f);
  const name = f.name ?? path.basename(file);
  const bar = new PhaseProgress();
  try {
    if (/\.zip$/i.test(file) || f.remoteCsv) {
      const size = fs.statSync(file).size;
      const columns = { imgKey: csv.imgKey, captionKey: csv.captionKey, separator: csv.separator };
      const upload = /\.zip$/i.test(file) ? { name, zip: file, columns } : { name, csv: file, columns };
      return await rpc('UploadDataset', () =>
        client.fineTunes.uploadDataset(upload, { onProgress: (p) => bar.update('uploading', p.bytes, size) }),
      );
    }
    const pairs = readCsvDataset(file, csv);
    // A row that cannot be read is the user's error, reported as such (the SDK cancels the upload).
    let localError: Error | undefined;
    try {
      return await rpc('UploadDataset', () =>
        client.fineTunes.uploadDataset(
          { name, pairs: csvPairs(pairs, (err) => (localError = err)) },
          { onProgress: (p) => bar.update('uploading pairs', p.messages, pairs.length, 'items') },
        ),
      );
    } catch (err) {
      throw localError ?? err;
    }
  } finally {
    bar.stop();
  }
}

const HP_FLAGS: [keyof FineTuneHyperparameters, string, 'float' | 'int' | 'string' | 'bool' | 'floats'][] = [
  ['learningRate', '--learning-rate <lr>', 'float'],
  ['lrSchedule', '--lr-schedule <name>', 'string'],
  ['warmupSteps', '--warmup-steps <n>', 'int'],
  ['batchSize', '--batch-size <n>', 'int'],
  ['epochs', '--epochs <n>', 'int'],
  ['precision', '--precision <p>', 'string'],
  ['colorJitter', '--color-jitter <b,c,s,h>', 'floats'],
  ['colorJitterProb', '--color-jitter-prob <p>', 'float'],
  ['grayscaleProb', '--grayscale-prob <p>', 'float'],
  ['gradCheckpointing', '--grad-checkpointing <bool>', 'bool'],
  ['validationSplit', '--validation-split <f>', 'float'],
  ['seed', '--seed <n>', 'int'],
  ['weightDecay', '--weight-decay <wd>', 'float'],
  ['gpusPerNode', '--gpus-per-node <n>', 'int'],
  ['nodes', '--nodes <n>', 'int'],
  ['image', '--image <ref>', 'string'],
  ['namespace', '--namespace <ns>', 'string'],
];

export function hyperparametersFromFlags(flags: Record<string, string | undefined>): FineTuneHyperparameters {
  const hp: Record<string, unknown> = {};
  for (const [key, flag, kind] of HP_FLAGS) {
    const raw = flags[key];
    if (raw === undefined) continue;
    const name = flag.split(' ')[0];
    const num = (s: string) => {
      const v = Number(s);
      if (s.trim() === '' || !Number.isFinite(v)) throw new Error(`${name} must be a number, got "${s}"`);
      if (kind === 'int' && !Number.isInteger(v)) throw new Error(`${name} must be an integer, got "${s}"`);
      return v;
    };
    if (kind === 'string') hp[key] = raw;
    else if (kind === 'bool') {
      if (!['true', 'false'].includes(raw)) throw new Error(`${name} must be true or false, got "${raw}"`);
      hp[key] = raw === 'true';
    } else if (kind === 'floats') hp[key] = raw.split(',').map(num);
    else hp[key] = num(raw);
  }
  // Each key is a FineTuneHyperparameters field (HP_FLAGS is typed so); the server validates the values.
  return hp as FineTuneHyperparameters;
}

function connOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--server <host:port>', 'clipserve gRPC address').env('CLIPSERVE_SERVER').default('localhost:50051'),
    )
    .option('--tls', 'connect with TLS')
    .option('--ca-cert <file>', 'PEM CA to trust (with --tls)')
    .option('--json', 'print JSON instead of tables');
}

export function register(program: Command): void {
  const ft = program
    .command('finetune')
    .description('fine-tune jobs and model versions on a clipserve server (FineTuneService, ModelService)');

  csvColumnOptions(connOptions(ft.command('upload <file>')))
    .description(
      'upload a dataset: a local CSV of image paths and captions (open_clip format), or a zip archive with its CSV inside',
    )
    .option('--name <name>', 'dataset name (default: the file name)')
    .option('--remote-csv', 'send the CSV itself: its paths name images inside the server data directory')
    .action(async (file: string, f: ConnFlags & CsvColumnFlags & { name?: string; remoteCsv?: boolean }) => {
      const dataset = await withClient(f, (client) => uploadFile(client, file, f));
      const shown = datasetJson(dataset, 'lowerCase');
      print(f, shown, datasetTable([shown]));
    });

  const create = connOptions(ft.command('create'))
    .description('create a fine-tune job (hyperparameters named as in the model card)')
    .requiredOption(
      '--training-file <id|path>',
      'dataset id (from upload) or a CSV path inside the server data directory',
    )
    .option(
      '--validation-file <id|path>',
      'separate validation dataset (default: --validation-split of the training file)',
    )
    .addOption(
      new Option('--method <method>', 'adapter (in the server) or full (Kubernetes training job)')
        .choices(['adapter', 'full'])
        .default('adapter'),
    )
    .option('--base-model <version>', 'model version to fine-tune (default: the active one)')
    .option('--suffix <s>', 'added to the new model version name ([a-z0-9-], up to 40)')
    .option('--watch', 'follow the job to its end, with a progress bar, then print the final table');
  for (const [, flag] of HP_FLAGS)
    create.option(flag, `hyperparameter ${flag.split(' ')[0].slice(2).replace(/-/g, '_')}`);
  create.action(async (f: CreateFlags) => {
    await withClient(f, async (client) => {
      const hyperparameters = hyperparametersFromFlags(f as Record<string, string | undefined>);
      const job = await rpc('CreateFineTuneJob', () =>
        client.fineTunes.create({
          trainingFile: f.trainingFile,
          validationFile: f.validationFile ?? '',
          method: f.method,
          baseModel: f.baseModel ?? '',
          suffix: f.suffix ?? '',
          hyperparameters,
        }),
      );
      const final = f.watch ? await watchJob(client, job.id) : job;
      print(f, jobJson(final), jobDetails(final));
      if (f.watch && final.state !== 'succeeded') process.exitCode = 1;
    });
  });

  connOptions(ft.command('get <job>'))
    .description('show a job')
    .action(async (jobId: string, f: ConnFlags) => {
      const job = await withClient(f, (client) => rpc('GetFineTuneJob', () => client.fineTunes.get(jobId)));
      print(f, jobJson(job), jobDetails(job));
    });

  connOptions(ft.command('list'))
    .description('list jobs, newest first')
    .option('--limit <n>', 'most jobs to show', '20')
    .action(async (f: ConnFlags & { limit: string }) => {
      const jobs = await withClient(f, (client) =>
        firstItems(f, 100, async (pageSize, pageToken) => {
          const page = await rpc('ListFineTuneJobs', () => client.fineTunes.list({ pageSize, pageToken }));
          return { items: page.jobs, nextPageToken: page.nextPageToken };
        }),
      );
      print(f, jobs.map(jobJson), jobTable(jobs));
    });

  connOptions(ft.command('datasets'))
    .description('list your datasets (those your API key uploaded or registered), newest first')
    .option('--limit <n>', 'most datasets to show', '50')
    .action(async (f: ConnFlags & { limit: string }) => {
      const datasets = await withClient(f, (client) =>
        firstItems(f, 500, async (pageSize, pageToken) => {
          const page = await rpc('ListDatasets', () => client.fineTunes.listDatasets({ pageSize, pageToken }));
          return { items: page.datasets, nextPageToken: page.nextPageToken };
        }),
      );
      const shown: DatasetJson[] = datasets.map((d) => datasetJson(d, 'lowerCase'));
      print(f, shown, datasetTable(shown));
    });

  connOptions(ft.command('delete-dataset <dataset>'))
    .description('delete one of your datasets and its files (refused while an unfinished job reads it)')
    .action(async (datasetId: string, f: ConnFlags) => {
      const dataset = await withClient(f, (client) =>
        rpc('DeleteDataset', () => client.fineTunes.deleteDataset(datasetId)),
      );
      const shown = datasetJson(dataset, 'enumName');
      print(f, shown, `deleted\n${datasetTable([shown])}`);
    });

  connOptions(ft.command('cancel <job>'))
    .description('cancel a queued or running job')
    .action(async (jobId: string, f: ConnFlags) => {
      const job = await withClient(f, (client) => rpc('CancelFineTuneJob', () => client.fineTunes.cancel(jobId)));
      print(f, jobJson(job), jobTable([job]));
    });

  connOptions(ft.command('watch <job>'))
    .description('follow a job to its end (progress bar), then print the final table')
    .action(async (jobId: string, f: ConnFlags) => {
      const job = await withClient(f, (client) => watchJob(client, jobId));
      print(f, jobJson(job), jobDetails(job));
      if (job.state !== 'succeeded') process.exitCode = 1;
    });

  const models = ft.command('models').description('model versions (ModelService)');
  connOptions(models.command('list'))
    .description('list model versions, newest first')
    .action(async (f: ConnFlags) => {
      const list = await withClient(f, (client) => rpc('ListModels', () => client.models.list()));
      print(f, modelListJson(list), modelTable(list));
    });
  connOptions(models.command('activate <version>'))
    .description('serve a model version (hot swap; the old one keeps serving if it fails)')
    .action(async (version: string, f: ConnFlags) => {
      const res = await withClient(f, (client) => rpc('ActivateModel', () => client.models.activate(version)));
      print(
        f,
        activateJson(res.model, res.previousVersion),
        `activated ${res.model.version} (was ${res.previousVersion})\n`,
      );
    });
}
