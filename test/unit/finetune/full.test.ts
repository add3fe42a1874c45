/**
 * The `full` fine-tune method, without a cluster: hyperparameter defaults and checks, the
 * hyperparameter → open_clip_train flag mapping (the generated command line is parsed back the way
 * argparse and ast.literal_eval read it), the Job / Service manifests (validated against the
 * Kubernetes API schemas, unknown fields included), trainer log parsing, the validation split, and
 * the RBAC the deploy base grants for the API calls the runner makes.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import {
  FineTunePreconditionError,
  FineTuneValidationError,
  type Hyperparameters,
} from '../../../server/src/finetune/method';
import {
  createFullMethod,
  FULL_DEFAULTS,
  loadKubeConfig,
  resolveFullHyperparameters,
} from '../../../server/src/finetune/full';
import {
  buildTrainingManifests,
  jobLabelValue,
  ownedByJob,
  trainingJobName,
  type TrainingJobSpec,
} from '../../../server/src/finetune/full/manifests';
import {
  escapeKubeExpansion,
  HYPERPARAMETER_FLAGS,
  openClipTrainArgs,
  torchrunArgs,
  type TrainerInputs,
} from '../../../server/src/finetune/full/trainer-args';
import { parseTrainerLine, stepsPerEpoch } from '../../../server/src/finetune/full/trainer-log';
import { prepareTrainingData } from '../../../server/src/finetune/full/training-data';
import { kubeClient } from '../../../server/src/finetune/full/kube-client';
import { validateObjects, type K8sObject } from '../../helpers/k8s-schema';

const REPO = path.resolve(__dirname, '..', '..', '..');

// ---- a reader of the generated command line, as the trainer's argparse sees it -------------------

/** open_clip_train flags that take no value (store_true). */
const STORE_TRUE = new Set(['--grad-checkpointing']);
/** Flags with nargs ('*' or '+'): every following token up to the next --flag. */
const MULTI = new Set(['--aug-cfg']);

function parseArgv(argv: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!flag.startsWith('--')) throw new Error(`stray positional ${JSON.stringify(flag)} at ${i}`);
    if (out.has(flag)) throw new Error(`flag ${flag} given twice`);
    if (STORE_TRUE.has(flag)) {
      out.set(flag, []);
    } else if (MULTI.has(flag)) {
      const vals: string[] = [];
      while (i + 1 < argv.length && !argv[i + 1].startsWith('--')) vals.push(argv[++i]);
      out.set(flag, vals);
    } else {
      if (i + 1 >= argv.length) throw new Error(`flag ${flag} has no value`);
      out.set(flag, [argv[++i]]);
    }
  }
  return out;
}

/** Python float() of a flag value. */
function pyFloat(s: string): number {
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`not a Python float literal: ${s}`);
  return Number(s);
}

/** ast.literal_eval of the values open_clip's ParseKwargs sees (numbers and tuples of numbers). */
function literalEval(s: string): number | number[] {
  const tuple = /^\((.*)\)$/.exec(s);
  if (tuple) return tuple[1].split(',').map((x) => pyFloat(x.trim()));
  return pyFloat(s);
}

/** open_clip's ParseKwargs: key=value, split on the one '='. */
function parseAugCfg(values: string[]): Record<string, number | number[]> {
  const kw: Record<string, number | number[]> = {};
  for (const v of values) {
    const parts = v.split('=');
    if (parts.length !== 2) throw new Error(`ParseKwargs would fail on ${JSON.stringify(v)} (needs exactly one '=')`);
    if (/\s/.test(v)) throw new Error(`whitespace in ${JSON.stringify(v)}`);
    kw[parts[0]] = literalEval(parts[1]);
  }
  return kw;
}

const INPUTS: TrainerInputs = {
  trainData: '/data/jobs/ftjob-1/data/train.tsv',
  valData: '/data/jobs/ftjob-1/data/val.tsv',
  logsDir: '/data/jobs/ftjob-1/trainer',
  runName: 'run',
  baseModelDir: '/data/base-models/ViT-L-14-0123456789abcdef',
  workers: 4,
};

function trainerFlags(hp: Hyperparameters, inputs: TrainerInputs = INPUTS): Map<string, string[]> {
  return parseArgv(openClipTrainArgs(resolveFullHyperparameters(hp), inputs));
}

describe('full: hyperparameters', () => {
  test('defaults are the model card recipe', () => {
    const r = resolveFullHyperparameters({});
    expect(r).toMatchObject({
      learning_rate: 5e-6,
      lr_schedule: 'cosine',
      batch_size: 64,
      epochs: 40,
      precision: 'amp_bf16',
      color_jitter: [0.2, 0.2, 0.1, 0.0],
      color_jitter_prob: 0.7,
      grayscale_prob: 0.2,
      grad_checkpointing: true,
      gpus_per_node: 1,
      nodes: 1,
    });
    expect(r.image).toBeUndefined();
    expect(r.namespace).toBeUndefined();
  });

  test.each<[string, Hyperparameters, RegExp]>([
    ['negative lr', { learning_rate: -1 }, /learning_rate must be > 0/],
    ['NaN lr', { learning_rate: NaN }, /learning_rate must be a finite number/],
    ['unknown schedule', { lr_schedule: 'linear' as 'cosine' }, /lr_schedule must be "cosine"/],
    ['fractional batch', { batch_size: 2.5 }, /batch_size must be an integer/],
    ['zero epochs', { epochs: 0 }, /epochs must be an integer in \[1/],
    ['unknown precision', { precision: 'int8' as 'fp32' }, /precision must be one of/],
    [
      '3 jitter values',
      { color_jitter: [0.1, 0.1, 0.1] as unknown as [number, number, number, number] },
      /color_jitter must be 4 numbers/,
    ],
    ['hue > 0.5', { color_jitter: [0, 0, 0, 0.6] }, /hue must be <= 0.5/],
    ['jitter prob > 1', { color_jitter_prob: 1.5 }, /color_jitter_prob must be in \[0, 1\]/],
    ['negative grayscale', { grayscale_prob: -0.1 }, /grayscale_prob must be in \[0, 1\]/],
    ['split of 1', { validation_split: 1 }, /validation_split must be < 1/],
    ['0 GPUs', { gpus_per_node: 0 }, /gpus_per_node must be an integer in \[1, 16\]/],
    ['too many nodes', { nodes: 1000 }, /nodes must be an integer in \[1, 64\]/],
    ['bad namespace', { namespace: 'Training_NS' }, /not a valid Kubernetes namespace/],
    ['image with spaces', { image: 'my image' }, /not a container image reference/],
    ['negative wd', { weight_decay: -0.1 }, /weight_decay must be >= 0/],
  ])('rejects %s', (_name, hp, message) => {
    expect(() => resolveFullHyperparameters(hp)).toThrow(FineTuneValidationError);
    expect(() => resolveFullHyperparameters(hp)).toThrow(message);
  });
});

describe('full: hyperparameter → open_clip_train flags', () => {
  // One row per hyperparameter: a non-default value and what the trainer must receive for it.
  const TABLE: Array<[keyof typeof HYPERPARAMETER_FLAGS, Hyperparameters, (f: Map<string, string[]>) => void]> = [
    ['learning_rate', { learning_rate: 1.25e-5 }, (f) => expect(pyFloat(f.get('--lr')![0])).toBe(1.25e-5)],
    ['lr_schedule', { lr_schedule: 'cosine' }, (f) => expect(f.get('--lr-scheduler')).toEqual(['cosine'])],
    ['warmup_steps', { warmup_steps: 777 }, (f) => expect(f.get('--warmup')).toEqual(['777'])],
    ['batch_size', { batch_size: 48 }, (f) => expect(f.get('--batch-size')).toEqual(['48'])],
    ['epochs', { epochs: 7 }, (f) => expect(f.get('--epochs')).toEqual(['7'])],
    ['precision', { precision: 'fp32' }, (f) => expect(f.get('--precision')).toEqual(['fp32'])],
    [
      'color_jitter',
      { color_jitter: [0.3, 0.25, 0.125, 0.05] },
      (f) => expect(parseAugCfg(f.get('--aug-cfg')!).color_jitter).toEqual([0.3, 0.25, 0.125, 0.05]),
    ],
    [
      'color_jitter_prob',
      { color_jitter_prob: 0.35 },
      (f) => expect(parseAugCfg(f.get('--aug-cfg')!).color_jitter_prob).toBe(0.35),
    ],
    [
      'grayscale_prob',
      { grayscale_prob: 0.05 },
      (f) => expect(parseAugCfg(f.get('--aug-cfg')!).gray_scale_prob).toBe(0.05),
    ],
    ['grad_checkpointing', { grad_checkpointing: false }, (f) => expect(f.has('--grad-checkpointing')).toBe(false)],
    ['seed', { seed: 1234 }, (f) => expect(f.get('--seed')).toEqual(['1234'])],
    ['weight_decay', { weight_decay: 0.05 }, (f) => expect(pyFloat(f.get('--wd')![0])).toBe(0.05)],
  ];

  test('the table covers every flag-mapped hyperparameter', () => {
    expect(TABLE.map(([k]) => k).sort()).toEqual(Object.keys(HYPERPARAMETER_FLAGS).sort());
  });

  test.each(TABLE)('%s', (name, hp, check) => {
    const flags = trainerFlags(hp);
    check(flags);
    // The flag the table names is the one that changed, and nothing else moved.
    const defaults = trainerFlags({});
    const changed = [...new Set([...flags.keys(), ...defaults.keys()])].filter(
      (k) => JSON.stringify(flags.get(k)) !== JSON.stringify(defaults.get(k)),
    );
    if (name !== 'lr_schedule') expect(changed).toEqual([HYPERPARAMETER_FLAGS[name]]);
  });

  test('the card recipe parses back to the card values', () => {
    const f = trainerFlags({});
    expect(pyFloat(f.get('--lr')![0])).toBe(5e-6);
    expect(f.get('--lr-scheduler')).toEqual(['cosine']);
    expect(f.get('--batch-size')).toEqual(['64']);
    expect(f.get('--epochs')).toEqual(['40']);
    expect(f.get('--precision')).toEqual(['amp_bf16']);
    expect(f.get('--grad-checkpointing')).toEqual([]);
    expect(parseAugCfg(f.get('--aug-cfg')!)).toEqual({
      color_jitter: [0.2, 0.2, 0.1, 0],
      color_jitter_prob: 0.7,
      gray_scale_prob: 0.2,
    });
    expect(f.get('--dist-backend')).toEqual(['nccl']);
    expect(f.get('--dataset-type')).toEqual(['csv']);
    expect(f.get('--csv-separator')).toEqual(['\t']);
    expect(f.get('--csv-img-key')).toEqual(['filepath']);
    expect(f.get('--csv-caption-key')).toEqual(['title']);
    expect(f.get('--train-data')).toEqual([INPUTS.trainData]);
    expect(f.get('--val-data')).toEqual([INPUTS.valData]);
    expect(f.get('--model')).toEqual([`local-dir:${INPUTS.baseModelDir}`]);
    expect(f.has('--pretrained')).toBe(false);
    expect(f.get('--logs')).toEqual([INPUTS.logsDir]);
    expect(f.get('--name')).toEqual(['run']);
    expect(f.get('--resume')).toEqual(['latest']);
    expect(f.get('--save-frequency')).toEqual(['1']);
  });

  test('every flag is one open_clip_train defines (params.py)', () => {
    const known = new Set([
      '--train-data',
      '--val-data',
      '--val-frequency',
      '--dataset-type',
      '--csv-separator',
      '--csv-img-key',
      '--csv-caption-key',
      '--model',
      '--lr',
      '--lr-scheduler',
      '--warmup',
      '--wd',
      '--batch-size',
      '--epochs',
      '--precision',
      '--aug-cfg',
      '--grad-checkpointing',
      '--seed',
      '--workers',
      '--logs',
      '--name',
      '--save-frequency',
      '--resume',
      '--zeroshot-frequency',
      '--dist-backend',
      '--dist-url',
    ]);
    for (const k of trainerFlags({}).keys()) expect(known).toContain(k);
  });

  test('no validation data: no --val-data', () => {
    const f = trainerFlags({}, { ...INPUTS, valData: undefined });
    expect(f.has('--val-data')).toBe(false);
    expect(f.has('--val-frequency')).toBe(false);
  });

  test('torchrun: standalone on one node, static rendezvous at rank 0 on several', () => {
    expect(torchrunArgs({ nodes: 1, gpusPerNode: 6 })).toEqual(['--standalone', '--nnodes=1', '--nproc_per_node=6']);
    expect(torchrunArgs({ nodes: 3, gpusPerNode: 8, masterAddr: 'j-0.j' })).toEqual([
      '--nnodes=3',
      '--nproc_per_node=8',
      '--node_rank=$(JOB_COMPLETION_INDEX)',
      '--master_addr=j-0.j',
      '--master_port=29500',
    ]);
    expect(() => torchrunArgs({ nodes: 2, gpusPerNode: 1 })).toThrow(/masterAddr/);
    expect(escapeKubeExpansion('/data/$(HOME)/x')).toBe('/data/$$(HOME)/x');
  });
});

describe('full: Kubernetes manifests', () => {
  const spec = (hp: Hyperparameters, extra: Partial<TrainingJobSpec> = {}): TrainingJobSpec => {
    const r = resolveFullHyperparameters(hp);
    return {
      jobId: 'ftjob-7f3a9c',
      namespace: 'training',
      image: 'registry.example.com/open-clip-train:3.1.0',
      hp: r,
      trainerArgs: openClipTrainArgs(r, INPUTS),
      storage: { pvcName: 'clipserve-data', mountPath: '/data' },
      ...extra,
    };
  };

  test('one node: a plain Job, schema-valid, the card recipe on 6 GPUs', () => {
    const { job, service } = buildTrainingManifests(spec({ gpus_per_node: 6 }));
    expect(service).toBeUndefined();
    expect(validateObjects([job as K8sObject])).toEqual([]);
    expect(job.spec!.completionMode).toBeUndefined();
    expect(job.spec!.completions).toBe(1);
    const pod = job.spec!.template.spec!;
    expect(pod.restartPolicy).toBe('Never');
    const c = pod.containers[0];
    expect(c.image).toBe('registry.example.com/open-clip-train:3.1.0');
    expect(c.resources!.limits!['nvidia.com/gpu']).toBe('6');
    expect(c.command).toEqual(['torchrun']);
    const args = c.args!;
    const m = args.indexOf('-m');
    expect(args.slice(0, m)).toEqual(['--standalone', '--nnodes=1', '--nproc_per_node=6']);
    expect(args[m + 1]).toBe('open_clip_train.main');
    // The trainer arguments travel unchanged (no $( to escape in these paths).
    expect(args.slice(m + 2)).toEqual(openClipTrainArgs(resolveFullHyperparameters({ gpus_per_node: 6 }), INPUTS));
    expect(c.volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
    expect(pod.volumes).toContainEqual({ name: 'data', persistentVolumeClaim: { claimName: 'clipserve-data' } });
    expect(pod.volumes!.find((v) => v.name === 'dshm')!.emptyDir!.medium).toBe('Memory');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(job.metadata!.annotations!['clipserve.io/finetune-job-id']).toBe('ftjob-7f3a9c');
  });

  test('several nodes: an Indexed Job and a headless Service for the rendezvous, both schema-valid', () => {
    const { job, service } = buildTrainingManifests(spec({ gpus_per_node: 8, nodes: 4 }));
    expect(service).toBeDefined();
    const owned = ownedByJob(service!, { name: job.metadata!.name!, uid: '6f1c0b7e-1111-2222-3333-444455556666' });
    expect(validateObjects([job as K8sObject, owned as K8sObject])).toEqual([]);
    expect(job.spec).toMatchObject({ completionMode: 'Indexed', completions: 4, parallelism: 4 });
    const pod = job.spec!.template.spec!;
    const name = job.metadata!.name!;
    expect(pod.subdomain).toBe(service!.metadata!.name);
    expect(service!.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
    // The Service selects exactly this job's pods.
    const labels = job.spec!.template.metadata!.labels!;
    for (const [k, v] of Object.entries(service!.spec!.selector!)) expect(labels[k]).toBe(v);
    const c = pod.containers[0];
    expect(c.args).toContain(`--master_addr=${name}-0.${name}`);
    expect(c.args).toContain('--node_rank=$(JOB_COMPLETION_INDEX)');
    // $(JOB_COMPLETION_INDEX) is expanded by the kubelet only from the container's own env.
    expect(c.env!.find((e) => e.name === 'JOB_COMPLETION_INDEX')!.valueFrom!.fieldRef!.fieldPath).toBe(
      "metadata.annotations['batch.kubernetes.io/job-completion-index']",
    );
    expect(c.ports).toEqual([{ name: 'rendezvous', containerPort: 29500, protocol: 'TCP' }]);
    expect(owned.metadata!.ownerReferences).toEqual([
      { apiVersion: 'batch/v1', kind: 'Job', name, uid: '6f1c0b7e-1111-2222-3333-444455556666' },
    ]);
  });

  test('pod options reach the pod and stay schema-valid', () => {
    const { job } = buildTrainingManifests(
      spec(
        { gpus_per_node: 2 },
        {
          pod: {
            requests: { cpu: '12', memory: '96Gi' },
            limits: { cpu: '16', memory: '128Gi' },
            nodeSelector: { 'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3' },
            tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'training', effect: 'NoSchedule' }],
            imagePullSecrets: ['regcred'],
            serviceAccountName: 'trainer',
            activeDeadlineSeconds: 86400,
            ttlSecondsAfterFinished: 600,
            labels: { team: 'search' },
          },
        },
      ),
    );
    expect(validateObjects([job as K8sObject])).toEqual([]);
    const pod = job.spec!.template.spec!;
    expect(pod.containers[0].resources).toEqual({
      requests: { cpu: '12', memory: '96Gi' },
      limits: { 'nvidia.com/gpu': '2', cpu: '16', memory: '128Gi' },
    });
    expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    expect(job.spec).toMatchObject({ activeDeadlineSeconds: 86400, ttlSecondsAfterFinished: 600 });
    expect(job.spec!.template.metadata!.labels!.team).toBe('search');
  });

  test('names: DNS-1123, short enough for Indexed pod hostnames, distinct per job id', () => {
    const ids = [
      'ftjob-abc',
      'FTJOB-abc',
      'ftjob_abc',
      'ftjob-' + 'x'.repeat(80),
      'ftjob-' + 'x'.repeat(80) + 'y',
      '---',
    ];
    const names = ids.map(trainingJobName);
    for (const n of names) {
      expect(n).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(n.length).toBeLessThanOrEqual(52);
    }
    expect(new Set(names).size).toBe(ids.length);
    expect(trainingJobName('ftjob-abc')).toBe('clipserve-ftjob-abc');
    for (const id of ids) expect(jobLabelValue(id)).toMatch(/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/);
  });
});

describe('full: trainer log lines', () => {
  test('train progress and the eval summary, with the logging prefix', () => {
    const train =
      '2026-11-27,09:12:01 | INFO | Train Epoch: 3 [ 2560/20700 (12%)] Data (t): 0.112 Batch (t): 1.934, 198.551/s, 33.0918/s/gpu LR: 0.000005 Logit Scale: 99.998 Contrastive_loss: 0.91234 (0.93012) Loss: 0.91234 (0.93012)';
    expect(parseTrainerLine(train)).toEqual({
      kind: 'step',
      epoch: 3,
      samples: 2560,
      samplesPerEpoch: 20700,
      learningRate: 0.000005,
      loss: 0.91234,
    });
    const evalLine =
      '2026-11-27,09:40:11 | INFO | Eval Epoch: 4 image_to_text_mean_rank: 2.2400\timage_to_text_median_rank: 1.0000\timage_to_text_R@1: 0.7000\timage_to_text_R@5: 0.9600\t' +
      'text_to_image_R@10: 0.9810\tclip_val_loss: 0.5123\tepoch: 4.0000\tnum_samples: 2300.0000';
    expect(parseTrainerLine(evalLine)).toEqual({
      kind: 'eval',
      epoch: 4,
      metrics: {
        image_to_text_mean_rank: 2.24,
        image_to_text_median_rank: 1,
        'image_to_text_R@1': 0.7,
        'image_to_text_R@5': 0.96,
        'text_to_image_R@10': 0.981,
        clip_val_loss: 0.5123,
      },
    });
    // Running eval losses and unrelated lines are not summaries.
    expect(
      parseTrainerLine('2026-11-27,09:39:00 | INFO | Eval Epoch: 4 [256 / 2300]\tClip Loss: 0.512345\t'),
    ).toBeUndefined();
    expect(parseTrainerLine('NCCL INFO Channel 00/02 : 0 1')).toBeUndefined();
  });

  test('steps per epoch: per-rank share of the data, last partial batch dropped', () => {
    expect(stepsPerEpoch(20700, 64, 6)).toBe(53);
    expect(stepsPerEpoch(128, 64, 1)).toBe(2);
    expect(stepsPerEpoch(127, 64, 1)).toBe(1);
    expect(stepsPerEpoch(10, 64, 1)).toBe(0);
  });
});

describe('full: training data files', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ft-full-data-'));
    const rows = ['filepath\ttitle'];
    for (let i = 0; i < 50; i++) rows.push(`img/${i}.png\t"a ""quoted"" caption\twith a tab ${i}"`);
    fs.mkdirSync(path.join(dir, 'ds'));
    fs.writeFileSync(path.join(dir, 'ds', 'pairs.tsv'), rows.join('\n') + '\n');
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a seeded split with absolute paths, quoting that pandas reads back', () => {
    const a = prepareTrainingData({
      datasetDir: path.join(dir, 'ds'),
      outDir: path.join(dir, 'a'),
      validationSplit: 0.2,
      seed: 7,
    });
    const b = prepareTrainingData({
      datasetDir: path.join(dir, 'ds'),
      outDir: path.join(dir, 'b'),
      validationSplit: 0.2,
      seed: 7,
    });
    const c = prepareTrainingData({
      datasetDir: path.join(dir, 'ds'),
      outDir: path.join(dir, 'c'),
      validationSplit: 0.2,
      seed: 8,
    });
    expect([a.trainPairs, a.valPairs]).toEqual([40, 10]);
    expect(fs.readFileSync(a.valFile!, 'utf8')).toBe(fs.readFileSync(b.valFile!, 'utf8'));
    expect(fs.readFileSync(a.valFile!, 'utf8')).not.toBe(fs.readFileSync(c.valFile!, 'utf8'));
    const { readCsvDataset } = jest.requireActual(
      '../../../server/src/dataset/csv',
    ) as typeof import('../../../server/src/dataset/csv');
    const train = readCsvDataset(a.trainFile);
    const val = readCsvDataset(a.valFile!);
    expect(train.length + val.length).toBe(50);
    expect(new Set([...train, ...val].map((p) => p.image)).size).toBe(50);
    expect(train[0].image).toBe(path.join(dir, 'ds', 'img', '0.png'));
    expect(train[0].caption).toBe('a "quoted" caption\twith a tab 0');
  });

  test('no split: no validation file; a separate validation.tsv is used as is', () => {
    const none = prepareTrainingData({
      datasetDir: path.join(dir, 'ds'),
      outDir: path.join(dir, 'n'),
      validationSplit: 0,
      seed: 0,
    });
    expect(none.valFile).toBeUndefined();
    expect(none.trainPairs).toBe(50);
    fs.mkdirSync(path.join(dir, 'ds2'));
    fs.writeFileSync(path.join(dir, 'ds2', 'pairs.tsv'), 'filepath\ttitle\nx.png\tx\ny.png\ty\n');
    fs.writeFileSync(path.join(dir, 'ds2', 'validation.tsv'), 'filepath\ttitle\nz.png\tz\n');
    const sep = prepareTrainingData({
      datasetDir: path.join(dir, 'ds2'),
      outDir: path.join(dir, 's'),
      validationSplit: 0.5,
      seed: 0,
    });
    expect([sep.trainPairs, sep.valPairs]).toEqual([2, 1]);
    expect(() =>
      prepareTrainingData({
        datasetDir: path.join(dir, 'nope'),
        outDir: path.join(dir, 'x'),
        validationSplit: 0,
        seed: 0,
      }),
    ).toThrow(/no pairs\.tsv/);
  });
});

describe('full: method configuration', () => {
  const storage = { pvcName: 'clipserve-data', mountPath: '/data' };

  test('without a cluster, validation fails with a clear message', () => {
    const m = createFullMethod({ kube: null, storage, image: 'x/y:1' });
    expect(m.name).toBe('full');
    expect(() => m.validate({})).toThrow(FineTunePreconditionError);
    expect(() => m.validate({})).toThrow(/no Kubernetes cluster is configured/);
  });

  test('with a cluster: needs an image; bad hyperparameters still fail', () => {
    const k8s = kubeClient();
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'https://k8s.example.com' }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'ctx', cluster: 'c', user: 'u', namespace: 'training' }],
      currentContext: 'ctx',
    });
    expect(() => createFullMethod({ kube: kc, storage }).validate({})).toThrow(FineTunePreconditionError);
    expect(() => createFullMethod({ kube: kc, storage }).validate({})).toThrow(
      /no trainer image: the server has no --finetune-image/,
    );
    expect(() => createFullMethod({ kube: kc, storage }).validate({ image: 'x/y:1' })).not.toThrow();
    expect(() => createFullMethod({ kube: kc, storage, image: 'x/y:1' }).validate({ nodes: 0 })).toThrow(
      /nodes must be/,
    );
  });

  test('loadKubeConfig: an explicit file, $KUBECONFIG, ~/.kube/config, else none (not localhost:8080)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ft-full-kc-'));
    const saved = {
      KUBECONFIG: process.env.KUBECONFIG,
      HOME: process.env.HOME,
      KUBERNETES_SERVICE_HOST: process.env.KUBERNETES_SERVICE_HOST,
    };
    const restore = (): void => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    };
    try {
      const file = path.join(dir, 'config');
      fs.writeFileSync(
        file,
        [
          'apiVersion: v1',
          'kind: Config',
          'current-context: gpu',
          'clusters:',
          '- name: gpu-cluster',
          '  cluster:',
          '    server: https://gpu.example.com:6443',
          'users:',
          '- name: trainer',
          '  user:',
          '    token: abc',
          'contexts:',
          '- name: gpu',
          '  context:',
          '    cluster: gpu-cluster',
          '    user: trainer',
          '    namespace: ml',
        ].join('\n'),
      );
      expect(loadKubeConfig({ kubeconfig: file })!.getCurrentCluster()!.server).toBe('https://gpu.example.com:6443');
      expect(() => loadKubeConfig({ kubeconfig: path.join(dir, 'missing') })).toThrow(/kubeconfig not found/);
      delete process.env.KUBERNETES_SERVICE_HOST;
      process.env.HOME = path.join(dir, 'home');
      fs.mkdirSync(process.env.HOME);
      process.env.KUBECONFIG = file;
      const fromEnv = loadKubeConfig()!;
      expect(fromEnv.getCurrentCluster()!.server).toBe('https://gpu.example.com:6443');
      // The context's namespace is the default for jobs that name none.
      expect(fromEnv.getContextObject(fromEnv.getCurrentContext())!.namespace).toBe('ml');
      delete process.env.KUBECONFIG;
      expect(loadKubeConfig()).toBeNull();
      fs.mkdirSync(path.join(process.env.HOME, '.kube'));
      fs.copyFileSync(file, path.join(process.env.HOME, '.kube', 'config'));
      expect(loadKubeConfig()!.getCurrentCluster()!.name).toBe('gpu-cluster');
    } finally {
      restore();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('FULL_DEFAULTS is frozen', () => {
    expect(Object.isFrozen(FULL_DEFAULTS)).toBe(true);
  });
});

describe('full: RBAC in deploy/k8s/base grants the calls the runner makes', () => {
  test('jobs create/get/delete, pods list, pods/log get, services create', () => {
    const docs = parseAllDocuments(fs.readFileSync(path.join(REPO, 'deploy', 'k8s', 'base', 'role.yaml'), 'utf8')).map(
      (d) => d.toJS(),
    );
    const role = docs.find((d) => d?.kind === 'Role');
    const grants = (group: string, resource: string, verb: string): boolean =>
      role.rules.some(
        (r: { apiGroups: string[]; resources: string[]; verbs: string[] }) =>
          r.apiGroups.includes(group) &&
          r.resources.includes(resource) &&
          (r.verbs.includes(verb) || r.verbs.includes('*')),
      );
    const needed: Array<[string, string, string]> = [
      ['batch', 'jobs', 'create'],
      ['batch', 'jobs', 'get'],
      ['batch', 'jobs', 'delete'],
      ['', 'pods', 'list'],
      ['', 'pods/log', 'get'],
      ['', 'services', 'create'],
    ];
    expect(needed.filter(([g, r, v]) => !grants(g, r, v))).toEqual([]);
  });
});
