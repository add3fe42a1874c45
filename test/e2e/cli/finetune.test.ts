/**
 * `clipserve finetune` against a real server: upload a local CSV (and a zip), create --watch (final
 * table with metrics before/after), get, list, cancel refusal, models list / activate; errors exit
 * non-zero with the server's message.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { formatTable, hyperparametersFromFlags, metricsTable } from '../../../server/src/cli/commands/finetune';
import { jobJson } from '../../../server/src/cli/commands/finetune-output';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { startServer, type RunningServer } from '../../../server/src/serve/server';
import { compiledModule } from '../../../server/src/util/paths';
import { iconDataset } from '../../helpers/finetune-fixtures';

jest.setTimeout(120_000);
const run = promisify(execFile);

describe('clipserve finetune', () => {
  let tmp: string;
  let server: RunningServer;
  const cli = (...args: string[]) =>
    run(process.execPath, [compiledModule('cli/main'), 'finetune', ...args, '--server', `127.0.0.1:${server.port}`], {
      env: { ...process.env, CLIPSERVE_API_KEY: '' },
    });

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-ftcli-'));
    await writeRandomBundle({ arch: 'tiny', seed: 21, outDir: path.join(tmp, 'base') });
    const pairs = (await iconDataset()).slice(0, 60);
    fs.mkdirSync(path.join(tmp, 'icons'));
    const lines = ['filepath\ttitle'];
    pairs.forEach((p, i) => {
      fs.writeFileSync(path.join(tmp, 'icons', `${i}.png`), p.image);
      lines.push(`icons/${i}.png\t${p.caption}`);
    });
    fs.writeFileSync(path.join(tmp, 'train.csv'), lines.join('\n') + '\n');
    server = await startServer({
      model: path.join(tmp, 'base'),
      dataDir: path.join(tmp, 'data'),
      host: '127.0.0.1',
      port: 0,
      metricsPort: 0,
      httpPort: 0,
      provider: 'cpu',
      intraOpThreads: 1,
      preprocessWorkers: 1,
      logger: pino({ level: 'silent' }),
    });
  });

  afterAll(async () => {
    await server?.shutdown(0);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('uploads, trains with --watch, lists and activates', async () => {
    const up = await cli('upload', path.join(tmp, 'train.csv'), '--name', 'icons', '--json');
    const dataset = JSON.parse(up.stdout);
    expect(dataset).toMatchObject({ numPairs: 60, format: 'pairs' });

    const created = await cli(
      'create',
      '--training-file',
      dataset.id,
      '--epochs',
      '20',
      '--batch-size',
      '16',
      '--learning-rate',
      '0.05',
      '--validation-split',
      '0.25',
      '--grayscale-prob',
      '0',
      '--suffix',
      'cli',
      '--watch',
    );
    expect(created.stdout).toMatch(/state\s+succeeded/);
    expect(created.stdout).toMatch(/METRIC\s+BEFORE\s+AFTER/);
    expect(created.stdout).toMatch(/text_to_image_R@1\s+\d+\.\d\d%\s+\d+\.\d\d%/);
    const version = /fine-tuned model\s+(\S+)/.exec(created.stdout)![1];
    expect(version).toMatch(/^seed-21-ft-cli-/);

    const list = await cli('list');
    expect(list.stdout.split('\n')[0]).toMatch(/^ID\s+STATE\s+METHOD/);
    expect(list.stdout).toContain(version);

    const models = await cli('models', 'list');
    expect(models.stdout).toMatch(new RegExp(`seed-21\\s+\\*`));
    const act = await cli('models', 'activate', version);
    expect(act.stdout).toBe(`activated ${version} (was seed-21)\n`);
    expect((await cli('models', 'list', '--json')).stdout).toContain(`"activeVersion": "${version}"`);

    const jobId = /^(ftjob-\S+)/m.exec((await cli('list')).stdout.split('\n')[1])![1];
    const cancel = await cli('cancel', jobId).then(
      () => undefined,
      (err: { stderr: string; code: number }) => err,
    );
    expect(cancel?.code).toBe(1);
    expect(cancel?.stderr).toMatch(/FAILED_PRECONDITION: job .* is already succeeded/);
    // --json is the message as plain JSON: no protobufjs oneof internals ("_epochs": "epochs").
    const got = JSON.parse((await cli('get', jobId, '--json')).stdout);
    expect(got.hyperparameters.epochs).toBe(20);
    expect(JSON.stringify(got)).not.toMatch(/"_[a-zA-Z]+":/);
  });

  it('uploads a zip archive', async () => {
    const yazl = await import('yazl');
    const zip = new yazl.ZipFile();
    zip.addFile(path.join(tmp, 'train.csv'), 'set/train.csv');
    for (let i = 0; i < 60; i++) zip.addFile(path.join(tmp, 'icons', `${i}.png`), `set/icons/${i}.png`);
    zip.end();
    const zipFile = path.join(tmp, 'icons.zip');
    await new Promise<void>((resolve, reject) =>
      zip.outputStream
        .pipe(fs.createWriteStream(zipFile))
        .on('close', () => resolve())
        .on('error', reject),
    );
    const up = JSON.parse((await cli('upload', zipFile, '--json')).stdout);
    expect(up).toMatchObject({ format: 'zip', numPairs: 60 });

    // datasets lists it (newest first); delete-dataset removes it.
    const listed = JSON.parse((await cli('datasets', '--json')).stdout);
    expect(listed[0]).toMatchObject({ id: up.id, format: 'zip' });
    expect((await cli('datasets')).stdout).toMatch(
      new RegExp(`^DATASET +NAME +FORMAT +PAIRS +BYTES +CREATED\n${up.id} `),
    );
    expect((await cli('delete-dataset', up.id)).stdout).toMatch(/^deleted\n/);
    expect(JSON.parse((await cli('datasets', '--json')).stdout).map((d: { id: string }) => d.id)).not.toContain(up.id);
  });

  it('formats hyperparameter flags and tables', () => {
    expect(
      hyperparametersFromFlags({
        learningRate: '5e-6',
        epochs: '40',
        colorJitter: '0.2,0.2,0.1,0',
        gradCheckpointing: 'true',
      }),
    ).toEqual({ learningRate: 5e-6, epochs: 40, colorJitter: [0.2, 0.2, 0.1, 0], gradCheckpointing: true });
    expect(() => hyperparametersFromFlags({ epochs: '1.5' })).toThrow(/--epochs must be an integer/);
    expect(() => hyperparametersFromFlags({ gradCheckpointing: 'yes' })).toThrow(/true or false/);
    expect(formatTable(['A', 'BB'], [['xyz', '1']])).toBe('A    BB\nxyz  1\n');
    // --json prints the SDK's job as the message: enum names, Unix seconds, 0 / [] when unset, keys in protobufjs's order.
    const job = jobJson({
      id: 'ftjob-1',
      method: 'adapter',
      baseModel: 'b',
      trainingFile: 'ds-1',
      validationFile: '',
      hyperparameters: { epochs: 3, learningRate: 1e-5 },
      state: 'validating_files',
      fineTunedModel: '',
      createdAt: new Date(5000),
      startedAt: null,
      finishedAt: null,
      error: { code: 'invalid_file', message: 'm', rows: [2] },
      metricsBefore: { 'R@1': 0.5 },
      metricsAfter: {},
      step: 0,
      totalSteps: 9,
      suffix: '',
    });
    expect(JSON.stringify(job)).toBe(
      '{"metricsBefore":{"R@1":0.5},"metricsAfter":{},"id":"ftjob-1","method":"adapter","baseModel":"b","trainingFile":"ds-1","validationFile":"",' +
        '"hyperparameters":{"colorJitter":[],"learningRate":0.00001,"epochs":3},"state":"FINE_TUNE_JOB_STATE_VALIDATING_FILES","fineTunedModel":"","createdAt":5,"startedAt":0,"finishedAt":0,' +
        '"error":{"rows":[2],"code":"invalid_file","message":"m"},"step":0,"totalSteps":9,"suffix":""}',
    );
    expect(metricsTable({ 'text_to_image_R@1': 0.1, image_to_text_mean_rank: 3 }, { 'text_to_image_R@1': 0.25 })).toBe(
      'METRIC                   BEFORE  AFTER\nimage_to_text_mean_rank  3.00    -\ntext_to_image_R@1        10.00%  25.00%\n',
    );
  });
});
