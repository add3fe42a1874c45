/**
 * The `full` method against the REAL upstream trainer (open_clip + open_clip_train at the pinned
 * commit, ../shared/vendor/open_clip-89fb801, never copied or patched):
 *
 * 1. open_clip_train's own `parse_args` (and torchrun's own parser, when torch is importable) reads
 *    every command line the server generates, one per hyperparameter combination of the table in
 *    docs/finetune.md (each precision × gradient checkpointing × with/without validation data,
 *    plus the boundaries of every numeric hyperparameter and a multi-node shape), and gets back
 *    exactly the values the job asked for.
 * 2. With Debian's python3-torch on the CPU and the import shims of test/fixtures/trainer/shims only:
 *    `clipserve serve --data-dir` with a kubeconfig pointing at a local Kubernetes stand-in that
 *    runs each Job's own container command (torchrun … -m open_clip_train.main …) as a process.
 *    A `full` job on an uploaded dataset trains a tiny model for one epoch from the base bundle
 *    (exported to safetensors for the trainer, `--model local-dir:`), and the server converts
 *    the trainer's epoch_1.pt, registers it, activates it and serves it: the served text
 *    embeddings equal open_clip's own encode_text of epoch_1.pt. That version is then the base of
 *    a second real run (its epoch_1.pt rewritten as safetensors for the trainer). Preconditions
 *    refused at CreateFineTuneJob are checked on the same server.
 *
 * Skips loudly without ../shared/vendor (part 1 and 2) or without python3-torch (part 2); in CI
 * (CI=true) a missing python3-torch is a failure: .ci/run installs it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveFullHyperparameters, trainingJobName } from '../../../server/src/finetune/full';
import { buildTrainingManifests } from '../../../server/src/finetune/full/manifests';
import { openClipTrainArgs } from '../../../server/src/finetune/full/trainer-args';
import { PRECISIONS, type Hyperparameters } from '../../../server/src/finetune/method';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import {
  client,
  iconDataset,
  rejection,
  unary,
  uploadPairs,
  watchToEnd,
  type Any,
} from '../../helpers/finetune-fixtures';
import { LocalKubeApi } from '../../helpers/local-kube';
import { startServerProcess, type ServerProcess } from '../../helpers/server-process';
import { SHARED_DIR } from '../../helpers/shared';

jest.setTimeout(600_000);

const VENDOR = path.join(SHARED_DIR, 'vendor');
const OPEN_CLIP = path.join(VENDOR, 'open_clip-89fb801');
const FTFY = path.join(VENDOR, 'python-ftfy-74dd045');
const HARNESS = path.join(__dirname, '..', '..', 'fixtures', 'trainer');
const HAVE_VENDOR = fs.existsSync(path.join(OPEN_CLIP, 'open_clip_train', 'params.py'));
/** Debian's interpreter first: its dist-packages hold python3-torch (a pyenv python would not). */
const PYTHON =
  process.env.CLIPSERVE_TEST_PYTHON ?? (fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const PYTHONPATH = [path.join(HARNESS, 'shims'), OPEN_CLIP, FTFY].join(path.delimiter);
/** ../shared is read-only reference material: no __pycache__ written into it. */
const PY_ENV = { PYTHONPATH, PYTHONDONTWRITEBYTECODE: '1' };
const HAVE_TORCH =
  HAVE_VENDOR &&
  spawnSync(PYTHON, ['-c', 'import torch, torchvision, pandas, braceexpand, regex, wcwidth, fsspec'], {
    env: { ...process.env, ...PY_ENV },
  }).status === 0;

function describeIf(ok: boolean, why: string, name: string, fn: () => void): void {
  if (ok) return describe(name, fn);
  if (process.env.CI === 'true' && HAVE_VENDOR) {
    describe(name, () =>
      test('has its prerequisites in CI', () => {
        throw new Error(`${why} (.ci/run installs it)`);
      }),
    );
    return;
  }
  console.warn(`\n!!! SKIPPING "${name}": ${why} !!!\n`);
  describe.skip(name, fn);
}

function python(args: string[], input: string): string {
  const r = spawnSync(PYTHON, args, {
    input,
    env: { ...process.env, ...PY_ENV },
    maxBuffer: 64 << 20,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`${PYTHON} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

// ---- 1. parse_args on every command line the server generates ----------------------------------

/** The hyperparameter combinations of docs/finetune.md's table that change the command line. */
function combinations(): Array<{ hp: Hyperparameters; val: boolean }> {
  const out: Array<{ hp: Hyperparameters; val: boolean }> = [];
  for (const precision of PRECISIONS)
    for (const grad_checkpointing of [true, false])
      for (const val of [true, false]) out.push({ hp: { precision, grad_checkpointing }, val });
  const edges: Hyperparameters[] = [
    { learning_rate: 1e-7 },
    { learning_rate: 0.123456789012345 },
    { learning_rate: 3 },
    { warmup_steps: 0 },
    { warmup_steps: 1_000_000 },
    { weight_decay: 0 },
    { weight_decay: 1e-12 },
    { batch_size: 1, epochs: 1 },
    { batch_size: 65_536, epochs: 10_000 },
    { color_jitter: [0, 0, 0, 0], color_jitter_prob: 0, grayscale_prob: 0 },
    { color_jitter: [1.5, 0.4, 2, 0.5], color_jitter_prob: 1, grayscale_prob: 1 },
    { seed: 0 },
    { seed: 2 ** 32 - 1 },
    { nodes: 4, gpus_per_node: 8 },
    { nodes: 1, gpus_per_node: 16 },
    { validation_split: 0 },
    { lr_schedule: 'cosine' },
  ];
  for (const hp of edges) out.push({ hp, val: hp.validation_split !== 0 });
  return out;
}

describeIf(
  HAVE_VENDOR,
  `upstream open_clip_train not found at ${OPEN_CLIP} (set CLIPSERVE_SHARED_DIR)`,
  'full: the real open_clip_train parse_args reads every generated command line',
  () => {
    test('every combination parses, to exactly the values asked for', () => {
      const cases = combinations().map(({ hp, val }) => {
        const r = resolveFullHyperparameters({ ...hp, image: 'x/trainer:1' });
        const trainerArgs = openClipTrainArgs(r, {
          trainData: '/data/jobs/ftjob-1/data/train.tsv',
          valData: val ? '/data/jobs/ftjob-1/data/val.tsv' : undefined,
          logsDir: '/data/jobs/ftjob-1/trainer',
          runName: 'run',
          baseModelDir: '/data/base-models/tiny-0123456789abcdef',
          workers: 4,
        });
        // The Job's container line, as the pod runs it (the kubelet expands $(VAR) and undoes $$().
        const { job } = buildTrainingManifests({
          jobId: 'ftjob-1',
          namespace: 'training',
          image: 'x/trainer:1',
          hp: r,
          trainerArgs,
          storage: { pvcName: 'clipserve-data', mountPath: '/data' },
        });
        const c = job.spec!.template.spec!.containers[0];
        const line = c.args!.map((a) => a.replace(/\$\(JOB_COMPLETION_INDEX\)/g, '0').replace(/\$\$\(/g, '$('));
        const m = line.indexOf('-m');
        expect(c.command).toEqual(['torchrun']);
        expect(line.slice(m, m + 2)).toEqual(['-m', 'open_clip_train.main']);
        return { r, val, trainer: line.slice(m + 2), torchrun: line.slice(0, m) };
      });
      const parsed = JSON.parse(
        python(
          [path.join(HARNESS, 'parse_args.py')],
          JSON.stringify(
            cases.map((c) => ({
              trainer: c.trainer,
              torchrun: [...c.torchrun, '-m', 'open_clip_train.main', ...c.trainer],
            })),
          ),
        ),
      );
      expect(parsed).toHaveLength(cases.length);
      cases.forEach(({ r, val }, i) => {
        const res = parsed[i].trainer;
        if (res.error) throw new Error(`parse_args refused ${JSON.stringify(cases[i].trainer)}: ${res.error}`);
        const a = res.args as Any;
        expect(a).toMatchObject({
          train_data: '/data/jobs/ftjob-1/data/train.tsv',
          val_data: val ? '/data/jobs/ftjob-1/data/val.tsv' : null,
          dataset_type: 'csv',
          csv_separator: '\t',
          csv_img_key: 'filepath',
          csv_caption_key: 'title',
          model: 'local-dir:/data/base-models/tiny-0123456789abcdef',
          pretrained: '',
          lr: r.learning_rate,
          lr_scheduler: r.lr_schedule,
          warmup: r.warmup_steps,
          wd: r.weight_decay,
          batch_size: r.batch_size,
          epochs: r.epochs,
          precision: r.precision,
          grad_checkpointing: r.grad_checkpointing,
          seed: r.seed,
          workers: 4,
          logs: '/data/jobs/ftjob-1/trainer',
          name: 'run',
          save_frequency: 1,
          resume: 'latest',
          zeroshot_frequency: 0,
          dist_backend: 'nccl',
          dist_url: 'env://',
        });
        expect(a.aug_cfg).toEqual({
          color_jitter: r.color_jitter,
          color_jitter_prob: r.color_jitter_prob,
          gray_scale_prob: r.grayscale_prob,
        });
        if (parsed[i].torchrun) {
          const t = parsed[i].torchrun;
          if (t.error) throw new Error(`torchrun refused ${JSON.stringify(cases[i].torchrun)}: ${t.error}`);
          expect(t.args.nproc_per_node).toBe(String(r.gpus_per_node));
          expect(t.args.nnodes).toBe(String(r.nodes));
          expect(t.args.module).toBe(true);
          expect(t.args.training_script).toBe('open_clip_train.main');
          expect(t.args.training_script_args).toEqual(cases[i].trainer);
          if (r.nodes > 1) expect(t.args.master_port).toBe(29500);
          else expect(t.args.standalone).toBe(true);
        }
      });
      console.log(
        `parse_args: ${cases.length} command lines read back by open_clip_train${parsed[0].torchrun ? ' and torchrun' : ''}`,
      );
    });

    test('the check can fail: a flag this trainer does not define is refused', () => {
      const [res] = JSON.parse(
        python(
          [path.join(HARNESS, 'parse_args.py')],
          JSON.stringify([{ trainer: ['--model', 'x', '--learning-rate', '1'] }]),
        ),
      );
      expect(res.trainer.error).toMatch(/unrecognized arguments: --learning-rate/);
    });
  },
);

// ---- 2. a real training run through the server ------------------------------------------------

describeIf(
  HAVE_TORCH,
  `${PYTHON} cannot import torch and the trainer's other Debian packages (apt-get install python3-torch python3-torchvision python3-pandas python3-braceexpand python3-regex python3-wcwidth python3-fsspec)`,
  'full: a real open_clip_train run, converted, registered and served',
  () => {
    let tmp: string;
    let kube: LocalKubeApi;
    let server: ServerProcess;
    const epochMs: number[] = [];
    let firstVersion: string | undefined;
    let firstDataset: string | undefined;

    beforeAll(async () => {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ft-full-real-'));
      // open_clip_train tokenizes with open_clip's CLIP BPE: the base bundle carries that very file.
      const base = path.join(tmp, 'base');
      await writeRandomBundle({
        arch: 'tiny',
        seed: 5,
        outDir: base,
        name: 'tiny-clip',
        vocabFile: path.join(OPEN_CLIP, 'open_clip', 'bpe_simple_vocab_16e6.txt.gz'),
      });
      kube = new LocalKubeApi({
        ...PY_ENV,
        PATH: `${path.dirname(PYTHON)}${path.delimiter}${process.env.PATH}`,
        OMP_NUM_THREADS: '2',
      });
      await kube.start();
      const kubeconfig = path.join(tmp, 'kubeconfig');
      kube.writeKubeconfig(kubeconfig, 'training');
      server = await startServerProcess(
        [
          '--model',
          base,
          '--data-dir',
          path.join(tmp, 'data'),
          '--finetune-image',
          'local/open-clip-train:test',
          '--finetune-workers-per-gpu',
          '0',
        ],
        { env: { KUBECONFIG: kubeconfig } },
      );
    });

    afterAll(async () => {
      await server?.stop();
      await kube?.stop();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    test('CreateFineTuneJob refuses what cannot run, before accepting the job', async () => {
      const ft = client('FineTuneService', server.port);
      const ds = await uploadPairs(ft, 'icons-small', (await iconDataset(32)).slice(0, 4));
      const tooBig = await rejection(
        unary(ft, 'CreateFineTuneJob', { trainingFile: ds.id, method: 'full', hyperparameters: { batchSize: 8 } }),
      );
      expect(tooBig.details).toMatch(/training pairs make no full batch of 8 per GPU/);
      expect(tooBig.code).toBe(3); // INVALID_ARGUMENT
      const { jobs } = await unary(ft, 'ListFineTuneJobs', {});
      expect(jobs).toHaveLength(0);
      ft.close();
    });

    test('one epoch of open_clip_train from the base bundle, served after conversion', async () => {
      const ft = client('FineTuneService', server.port);
      const models = client('ModelService', server.port);
      const embed = client('EmbeddingService', server.port);
      const pairs = (await iconDataset(32)).slice(0, 10);
      const ds = await uploadPairs(ft, 'icons', pairs);
      const hyperparameters = {
        epochs: 1,
        batchSize: 2,
        precision: 'fp32',
        warmupSteps: 1,
        validationSplit: 0.2,
        learningRate: 1e-4,
        gradCheckpointing: true,
        seed: 7,
      };
      const { job } = await unary(ft, 'CreateFineTuneJob', {
        trainingFile: ds.id,
        method: 'full',
        hyperparameters,
        suffix: 'real',
      });
      const started = Date.now();
      const events = (await watchToEnd(ft, job.id)).map((r) => r.event as Any);
      epochMs.push(Date.now() - started);
      const { job: done } = await unary(ft, 'GetFineTuneJob', { jobId: job.id });
      const messages = events.map((e) => String(e.message ?? ''));
      const jobName = trainingJobName(job.id);
      if (done.state !== 'FINE_TUNE_JOB_STATE_SUCCEEDED') {
        throw new Error(
          `job ${done.state}: ${JSON.stringify(done.error)}\n--- trainer log ---\n${kube.logOf(jobName) || '(no Job created)'}`,
        );
      }
      // The trainer's own progress lines became STEP and EPOCH events.
      const steps = events.filter((e) => /STEP/.test(String(e.type)));
      expect(steps.length).toBeGreaterThan(0);
      expect(events.some((e) => /EPOCH/.test(String(e.type)))).toBe(true);
      expect(messages.some((m) => /exporting the bundle's weights for the trainer/.test(m))).toBe(true);
      expect(messages.some((m) => /Train Epoch: 0/.test(m))).toBe(true);

      // The exact container line ran: local-dir base, the job's CSV, csv dataset type.
      const args = kube.jobs.get(jobName)!.job.spec!.template.spec!.containers[0].args!;
      const arg = (f: string): string => args[args.indexOf(f) + 1];
      expect(arg('--dataset-type')).toBe('csv');
      expect(arg('--train-data')).toBe(path.join(tmp, 'data', 'jobs', job.id, 'data', 'train.tsv'));
      const baseDir = arg('--model').slice('local-dir:'.length);
      expect(fs.existsSync(path.join(baseDir, 'open_clip_model.safetensors'))).toBe(true);
      const checkpoint = path.join(arg('--logs'), arg('--name'), 'checkpoints', 'epoch_1.pt');
      expect(fs.existsSync(checkpoint)).toBe(true);

      // Registered, activated, served: the served text tower is open_clip's on epoch_1.pt.
      const listed = await unary(models, 'ListModels', {});
      expect(listed.models.map((m: Any) => m.version)).toContain(done.fineTunedModel);
      await unary(models, 'ActivateModel', { version: done.fineTunedModel });
      const texts = ['a red circle on a white background', 'a blue star', 'icon'];
      const served = await unary(embed, 'EmbedText', { texts });
      expect(served.modelVersion).toBe(done.fineTunedModel);
      const expected = JSON.parse(
        python([path.join(HARNESS, 'encode_text.py'), baseDir, checkpoint], JSON.stringify(texts)),
      ) as number[][];
      let maxDiff = 0;
      served.embeddings.forEach((e: Any, i: number) =>
        e.values.forEach((v: number, j: number) => (maxDiff = Math.max(maxDiff, Math.abs(v - expected[i][j])))),
      );
      expect(maxDiff).toBeLessThan(1e-4);
      // ...and it is not the base model any more.
      const baseServed = JSON.parse(
        python(
          [path.join(HARNESS, 'encode_text.py'), baseDir, path.join(baseDir, 'open_clip_model.safetensors')],
          JSON.stringify(texts),
        ),
      ) as number[][];
      const moved = Math.max(...baseServed[0].map((v, j) => Math.abs(v - expected[0][j])));
      expect(moved).toBeGreaterThan(1e-6);
      console.log(
        `real trainer: job ${job.id} in ${epochMs[0]} ms (one epoch, ${steps.length} step events), served = open_clip(epoch_1.pt) within ${maxDiff.toExponential(2)}`,
      );
      firstVersion = done.fineTunedModel;
      firstDataset = ds.id;
      for (const c of [ft, models, embed]) c.close();
    });

    test('a version `full` produced is the base of the next run: its epoch_1.pt reaches the trainer as safetensors', async () => {
      expect(firstVersion).toBeDefined();
      const ft = client('FineTuneService', server.port);
      const models = client('ModelService', server.port);
      const hyperparameters = {
        epochs: 1,
        batchSize: 4,
        precision: 'fp32',
        warmupSteps: 1,
        validationSplit: 0,
        gradCheckpointing: false,
      };
      const { job } = await unary(ft, 'CreateFineTuneJob', {
        trainingFile: firstDataset,
        method: 'full',
        baseModel: firstVersion,
        hyperparameters,
        suffix: 'again',
      });
      const started = Date.now();
      const events = (await watchToEnd(ft, job.id)).map((r) => r.event as Any);
      const { job: done } = await unary(ft, 'GetFineTuneJob', { jobId: job.id });
      const jobName = trainingJobName(job.id);
      if (done.state !== 'FINE_TUNE_JOB_STATE_SUCCEEDED')
        throw new Error(
          `job ${done.state}: ${JSON.stringify(done.error)}\n--- trainer log ---\n${kube.logOf(jobName)}`,
        );
      expect(
        events.some((e) =>
          /rewriting the state dict of .*epoch_1\.pt as safetensors for the trainer/.test(String(e.message)),
        ),
      ).toBe(true);
      const listed = await unary(models, 'ListModels', {});
      expect(listed.models.find((m: Any) => m.version === done.fineTunedModel).parentVersion).toBe(firstVersion);
      console.log(`real trainer, second generation: job ${job.id} in ${Date.now() - started} ms`);
      for (const c of [ft, models]) c.close();
    });
  },
);
