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
 * only); results to stdout, as tables or, with --json, as JSON.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Command, Option } from 'commander';
import { PhaseProgress } from '../../checkpoint/progress';
import { readCsvDataset } from '../../dataset/csv';
import { PROTO_DIR } from '../../util/paths';
import { csvColumnOptions, csvColumns, type CsvColumnFlags } from '../csv-options';

type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

interface ConnFlags {
  server: string;
  tls?: boolean;
  caCert?: string;
  json?: boolean;
}

const CHUNK = 1 << 20;

function connect(service: 'FineTuneService' | 'ModelService', f: ConnFlags): { client: Client; meta: grpc.Metadata } {
  const def = protoLoader.loadSync(['clipserve/v1/finetune.proto', 'clipserve/v1/models.proto'], { includeDirs: [PROTO_DIR], defaults: true, oneofs: true, enums: String, longs: Number });
  const pkg = grpc.loadPackageDefinition(def) as Msg;
  const creds = f.tls ? grpc.credentials.createSsl(f.caCert ? fs.readFileSync(f.caCert) : null) : grpc.credentials.createInsecure();
  const client = new pkg.clipserve.v1[service](f.server, creds, { 'grpc.max_send_message_length': 64 << 20, 'grpc.max_receive_message_length': 64 << 20 }) as Client;
  const meta = new grpc.Metadata();
  const key = process.env.CLIPSERVE_API_KEY;
  if (key) meta.set('authorization', `Bearer ${key}`);
  return { client, meta };
}

function unary(c: { client: Client; meta: grpc.Metadata }, method: string, req: object): Promise<Msg> {
  return new Promise((resolve, reject) =>
    (c.client[method] as (r: object, m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r: Msg) => void) => void)(req, c.meta, (err, res) =>
      err ? reject(new Error(`${method}: ${grpc.status[err.code] ?? err.code}: ${err.details}`)) : resolve(res),
    ),
  );
}

const stateName = (s: string): string => s.replace(/^FINE_TUNE_JOB_STATE_/, '').toLowerCase();
const when = (secs: number): string => (secs ? new Date(secs * 1000).toISOString().replace('.000Z', 'Z') : '-');

/** A plain aligned text table. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) => r.map((cell, c) => (cell ?? '').padEnd(widths[c])).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

function jobTable(jobs: Msg[]): string {
  return formatTable(
    ['ID', 'STATE', 'METHOD', 'BASE MODEL', 'FINE-TUNED MODEL', 'STEP', 'CREATED'],
    jobs.map((j) => [j.id, stateName(j.state), j.method, j.baseModel, j.fineTunedModel || '-', `${j.step}/${j.totalSteps}`, when(j.createdAt)]),
  );
}

const METRIC_ORDER = ['R@1', 'R@5', 'R@10', 'mean_rank', 'median_rank'];

/** The model card's metrics before and after, one row per metric. */
export function metricsTable(before: Record<string, number>, after: Record<string, number>): string {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort((a, b) => {
    const dir = (k: string) => (k.startsWith('image_to_text') ? 0 : 1);
    const rank = (k: string) => METRIC_ORDER.findIndex((m) => k.endsWith(m));
    return dir(a) - dir(b) || rank(a) - rank(b) || a.localeCompare(b);
  });
  const fmt = (k: string, v: number | undefined) => (v === undefined ? '-' : k.includes('R@') ? `${(100 * v).toFixed(2)}%` : v.toFixed(2));
  return formatTable(['METRIC', 'BEFORE', 'AFTER'], keys.map((k) => [k, fmt(k, before[k]), fmt(k, after[k])]));
}

function jobDetails(j: Msg): string {
  let out = formatTable(
    ['FIELD', 'VALUE'],
    [
      ['id', j.id],
      ['state', stateName(j.state)],
      ['method', j.method],
      ['base model', j.baseModel],
      ['training file', j.trainingFile],
      ['validation file', j.validationFile || '-'],
      ['fine-tuned model', j.fineTunedModel || '-'],
      ['steps', `${j.step}/${j.totalSteps}`],
      ['created', when(j.createdAt)],
      ['started', when(j.startedAt)],
      ['finished', when(j.finishedAt)],
      ...(j.error ? [['error', `${j.error.code}: ${j.error.message}`]] : []),
    ],
  );
  if (Object.keys(j.metricsBefore ?? {}).length || Object.keys(j.metricsAfter ?? {}).length) out += '\n' + metricsTable(j.metricsBefore ?? {}, j.metricsAfter ?? {});
  return out;
}

/**
 * A message as plain JSON: without the synthetic oneof that proto-loader (`oneofs: true`) adds for
 * each proto3 `optional` field, which names the field that is set (`"_epochs": "epochs"`).
 */
export function plainJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plainJson);
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const syntheticOneof = k.startsWith('_') && (v === k.slice(1) || v === undefined);
    if (!syntheticOneof) out[k] = plainJson(v);
  }
  return out;
}

function datasetTable(datasets: Msg[]): string {
  return formatTable(
    ['DATASET', 'NAME', 'FORMAT', 'PAIRS', 'BYTES', 'CREATED'],
    datasets.map((d) => [d.id, d.name, d.format, String(d.numPairs), String(d.bytes), when(d.createdAt)]),
  );
}

/** The first `--limit` items of a paged FineTuneService list call, newest first. */
async function firstItems(f: ConnFlags & { limit: string }, method: 'ListFineTuneJobs' | 'ListDatasets', field: 'jobs' | 'datasets', maxPage: number): Promise<Msg[]> {
  const limit = Number(f.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`--limit must be a positive integer, got "${f.limit}"`);
  const c = connect('FineTuneService', f);
  try {
    const items: Msg[] = [];
    let pageToken = '';
    do {
      const page = await unary(c, method, { pageSize: Math.min(maxPage, limit - items.length), pageToken });
      items.push(...page[field]);
      pageToken = page.nextPageToken;
    } while (pageToken && items.length < limit);
    return items;
  } finally {
    c.client.close();
  }
}

function print(f: ConnFlags, value: unknown, text: string): void {
  process.stdout.write(f.json ? JSON.stringify(plainJson(value), null, 2) + '\n' : text);
}

/** DATASET_FORMAT_PAIRS → pairs: how the table and --json both show a dataset's format. */
const datasetFormatName = (f: string): string => f.replace(/^DATASET_FORMAT_/, '').toLowerCase();

/** Streams a job's events with a step progress bar until it ends; resolves with the final job. */
async function watchJob(c: { client: Client; meta: grpc.Metadata }, jobId: string): Promise<Msg> {
  const bar = new PhaseProgress();
  try {
    await new Promise<void>((resolve, reject) => {
      const call = (c.client.WatchFineTuneJob as (r: object, m: grpc.Metadata) => grpc.ClientReadableStream<Msg>)({ jobId }, c.meta);
      let lastPhase = '';
      call.on('data', (m: Msg) => {
        const e = m.event;
        if (e.type === 'FINE_TUNE_EVENT_TYPE_STEP') {
          const data = JSON.parse(e.dataJson || '{}') as Msg;
          bar.update('training (steps)', e.step, Number(data.total_steps ?? e.step), 'items');
        } else if (e.type === 'FINE_TUNE_EVENT_TYPE_STATE' || e.type === 'FINE_TUNE_EVENT_TYPE_EPOCH' || e.type === 'FINE_TUNE_EVENT_TYPE_LOG') {
          if (e.type === 'FINE_TUNE_EVENT_TYPE_STATE') lastPhase = stateName(e.state);
          if (!process.stderr.isTTY || e.type !== 'FINE_TUNE_EVENT_TYPE_EPOCH') process.stderr.write(`[${lastPhase || 'job'}] ${e.message}\n`);
        }
      });
      call.on('error', (err: grpc.ServiceError) => reject(new Error(`WatchFineTuneJob: ${grpc.status[err.code] ?? err.code}: ${err.details}`)));
      call.on('end', () => resolve());
    });
  } finally {
    bar.stop();
  }
  return (await unary(c, 'GetFineTuneJob', { jobId })).job;
}

/** Reads a local CSV (open_clip format) into pairs, paths relative to the CSV. */
function upload(c: { client: Client; meta: grpc.Metadata }, header: Msg, feed: (write: (m: Msg) => Promise<void>) => Promise<void>): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const call = (c.client.UploadDataset as (m: grpc.Metadata, cb: (e: grpc.ServiceError | null, r: Msg) => void) => grpc.ClientWritableStream<Msg>)(c.meta, (err, res) =>
      err ? reject(new Error(`UploadDataset: ${grpc.status[err.code] ?? err.code}: ${err.details}`)) : resolve(res.dataset),
    );
    // Honour flow control: wait for 'drain' when the stream's buffer is full.
    const write = (m: Msg) => new Promise<void>((r) => (call.write(m) ? r() : call.once('drain', () => r())));
    write({ header })
      .then(() => feed(write))
      .then(() => call.end(), (err: unknown) => {
        call.cancel();
        reject(err);
      });
  });
}

const HP_FLAGS: [string, string, 'float' | 'int' | 'string' | 'bool' | 'floats'][] = [
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

export function hyperparametersFromFlags(flags: Msg): Msg {
  const hp: Msg = {};
  for (const [key, flag, kind] of HP_FLAGS) {
    const raw = flags[key] as string | undefined;
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
  return hp;
}

function connOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--server <host:port>', 'clipserve gRPC address').env('CLIPSERVE_SERVER').default('localhost:50051'))
    .option('--tls', 'connect with TLS')
    .option('--ca-cert <file>', 'PEM CA to trust (with --tls)')
    .option('--json', 'print JSON instead of tables');
}

export function register(program: Command): void {
  const ft = program.command('finetune').description('fine-tune jobs and model versions on a clipserve server (FineTuneService, ModelService)');

  csvColumnOptions(connOptions(ft.command('upload <file>')))
    .description('upload a dataset: a local CSV of image paths and captions (open_clip format), or a zip archive with its CSV inside')
    .option('--name <name>', 'dataset name (default: the file name)')
    .option('--remote-csv', 'send the CSV itself: its paths name images inside the server data directory')
    .action(async (file: string, f: ConnFlags & CsvColumnFlags & Msg) => {
      const csv = csvColumns(f);
      const c = connect('FineTuneService', f);
      const name = f.name ?? path.basename(file);
      const columns = { csvImgKey: csv.imgKey, csvCaptionKey: csv.captionKey, csvSeparator: csv.separator };
      const bar = new PhaseProgress();
      try {
        let dataset: Msg;
        if (/\.zip$/i.test(file) || f.remoteCsv) {
          const size = fs.statSync(file).size;
          dataset = await upload(c, { name, format: /\.zip$/i.test(file) ? 'DATASET_FORMAT_ZIP' : 'DATASET_FORMAT_CSV', ...columns }, async (write) => {
            let done = 0;
            for await (const chunk of fs.createReadStream(file, { highWaterMark: CHUNK })) {
              await write({ chunk });
              done += (chunk as Buffer).length;
              bar.update('uploading', done, size);
            }
          });
        } else {
          const pairs = readCsvDataset(file, csv);
          dataset = await upload(c, { name, format: 'DATASET_FORMAT_PAIRS' }, async (write) => {
            for (let i = 0; i < pairs.length; i++) {
              let image: Buffer;
              try {
                image = fs.readFileSync(pairs[i].image);
              } catch (err) {
                throw new Error(`row ${i + 1}: cannot read ${pairs[i].image}: ${(err as Error).message}`);
              }
              await write({ pair: { image, caption: pairs[i].caption } });
              bar.update('uploading pairs', i + 1, pairs.length, 'items');
            }
          });
        }
        bar.stop();
        const shown: Msg = { ...dataset, format: datasetFormatName(dataset.format) };
        print(f, shown, datasetTable([shown]));
      } finally {
        bar.stop();
        c.client.close();
      }
    });

  const create = connOptions(ft.command('create'))
    .description('create a fine-tune job (hyperparameters named as in the model card)')
    .requiredOption('--training-file <id|path>', 'dataset id (from upload) or a CSV path inside the server data directory')
    .option('--validation-file <id|path>', 'separate validation dataset (default: --validation-split of the training file)')
    .addOption(new Option('--method <method>', 'adapter (in the server) or full (Kubernetes training job)').choices(['adapter', 'full']).default('adapter'))
    .option('--base-model <version>', 'model version to fine-tune (default: the active one)')
    .option('--suffix <s>', 'added to the new model version name ([a-z0-9-], up to 40)')
    .option('--watch', 'follow the job to its end, with a progress bar, then print the final table');
  for (const [, flag] of HP_FLAGS) create.option(flag, `hyperparameter ${flag.split(' ')[0].slice(2).replace(/-/g, '_')}`);
  create.action(async (f: ConnFlags & Msg) => {
    const c = connect('FineTuneService', f);
    try {
      const { job } = await unary(c, 'CreateFineTuneJob', {
        trainingFile: f.trainingFile,
        validationFile: f.validationFile ?? '',
        method: f.method,
        baseModel: f.baseModel ?? '',
        suffix: f.suffix ?? '',
        hyperparameters: hyperparametersFromFlags(f),
      });
      const final = f.watch ? await watchJob(c, job.id) : job;
      print(f, final, jobDetails(final));
      if (f.watch && final.state !== 'FINE_TUNE_JOB_STATE_SUCCEEDED') process.exitCode = 1;
    } finally {
      c.client.close();
    }
  });

  connOptions(ft.command('get <job>')).description('show a job').action(async (jobId: string, f: ConnFlags) => {
    const c = connect('FineTuneService', f);
    try {
      const { job } = await unary(c, 'GetFineTuneJob', { jobId });
      print(f, job, jobDetails(job));
    } finally {
      c.client.close();
    }
  });

  connOptions(ft.command('list'))
    .description('list jobs, newest first')
    .option('--limit <n>', 'most jobs to show', '20')
    .action(async (f: ConnFlags & { limit: string }) => {
      const jobs = await firstItems(f, 'ListFineTuneJobs', 'jobs', 100);
      print(f, jobs, jobTable(jobs));
    });

  connOptions(ft.command('datasets'))
    .description('list your datasets (those your API key uploaded or registered), newest first')
    .option('--limit <n>', 'most datasets to show', '50')
    .action(async (f: ConnFlags & { limit: string }) => {
      const datasets = (await firstItems(f, 'ListDatasets', 'datasets', 500)).map((d) => ({ ...d, format: datasetFormatName(d.format) }));
      print(f, datasets, datasetTable(datasets));
    });

  connOptions(ft.command('delete-dataset <dataset>'))
    .description('delete one of your datasets and its files (refused while an unfinished job reads it)')
    .action(async (datasetId: string, f: ConnFlags) => {
      const c = connect('FineTuneService', f);
      try {
        const { dataset } = await unary(c, 'DeleteDataset', { datasetId });
        print(f, dataset, `deleted\n${datasetTable([dataset])}`);
      } finally {
        c.client.close();
      }
    });

  connOptions(ft.command('cancel <job>')).description('cancel a queued or running job').action(async (jobId: string, f: ConnFlags) => {
    const c = connect('FineTuneService', f);
    try {
      const { job } = await unary(c, 'CancelFineTuneJob', { jobId });
      print(f, job, jobTable([job]));
    } finally {
      c.client.close();
    }
  });

  connOptions(ft.command('watch <job>')).description('follow a job to its end (progress bar), then print the final table').action(async (jobId: string, f: ConnFlags) => {
    const c = connect('FineTuneService', f);
    try {
      const job = await watchJob(c, jobId);
      print(f, job, jobDetails(job));
      if (job.state !== 'FINE_TUNE_JOB_STATE_SUCCEEDED') process.exitCode = 1;
    } finally {
      c.client.close();
    }
  });

  const models = ft.command('models').description('model versions (ModelService)');
  connOptions(models.command('list')).description('list model versions, newest first').action(async (f: ConnFlags) => {
    const c = connect('ModelService', f);
    try {
      const res = await unary(c, 'ListModels', {});
      print(
        f,
        res,
        formatTable(
          ['VERSION', 'ACTIVE', 'LOADED', 'NAME', 'PARENT', 'JOB', 'CREATED', 'T2I R@1'],
          res.models.map((m: Msg) => [m.version, m.active ? '*' : '', m.loaded ? 'yes' : '', m.name, m.parentVersion || '-', m.fineTuneJobId || '-', when(m.createdAt), m.metrics?.['text_to_image_R@1'] !== undefined ? `${(100 * m.metrics['text_to_image_R@1']).toFixed(2)}%` : '-']),
        ),
      );
    } finally {
      c.client.close();
    }
  });
  connOptions(models.command('activate <version>')).description('serve a model version (hot swap; the old one keeps serving if it fails)').action(async (version: string, f: ConnFlags) => {
    const c = connect('ModelService', f);
    try {
      const res = await unary(c, 'ActivateModel', { version });
      print(f, res, `activated ${res.model.version} (was ${res.previousVersion})\n`);
    } finally {
      c.client.close();
    }
  });
}
