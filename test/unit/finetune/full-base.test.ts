/**
 * The `full` method's preparation, without a cluster: the base model reaches the trainer as an
 * open_clip local-dir on the shared volume for every way a model can be configured (a checkpoint
 * the bundle was converted from, in safetensors or torch format; a bundle with no checkpoint left,
 * exported from its ONNX weights), the preconditions CreateFineTuneJob checks (and their gRPC
 * statuses), and the pod options as serve configuration.
 */
import { status as Status } from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors } from '../../../server/src/checkpoint/safetensors';
import { writeSafetensors } from '../../../server/src/checkpoint/safetensors-write';
import { convertCheckpoint } from '../../../server/src/checkpoint/convert';
import { createFullMethod, kubeClient } from '../../../server/src/finetune/full';
import { baseWeightsSource, prepareBaseModel, SAFETENSORS_WEIGHTS } from '../../../server/src/finetune/full/base-model';
import { buildTrainingManifests } from '../../../server/src/finetune/full/manifests';
import {
  FineTunePreconditionError,
  FineTuneValidationError,
  type FineTuneMethodEvent,
} from '../../../server/src/finetune/method';
import { fineTuneRpcError } from '../../../server/src/grpc/finetune-errors';
import { RpcError } from '../../../server/src/grpc/status';
import { loadBundle } from '../../../server/src/model/bundle';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { randomStateDict } from '../../../server/src/model/random-init';
import { readBundleStateDict } from '../../../server/src/model/bundle-weights';
import { ConfigError, resolveServeConfig } from '../../../server/src/serve/config';
import { writeClipSizedVocab } from '../../helpers/clip-vocab';
import { saveStateDict } from '../../helpers/torch-save';

let root: string;
let vocab: string;
let randomBase: string;

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ft-full-base-'));
  vocab = path.join(root, 'vocab.txt.gz');
  writeClipSizedVocab(vocab);
  randomBase = path.join(root, 'models', 'random');
  await writeRandomBundle({ arch: 'tiny', seed: 4, outDir: randomBase, name: 'tiny', vocabFile: vocab });
});

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function kube(): ReturnType<typeof kubeClient>['KubeConfig']['prototype'] {
  const kc = new (kubeClient().KubeConfig)();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://k8s.example.com' }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}

async function prepare(bundleDir: string, dataDir: string, events: FineTuneMethodEvent[] = []): Promise<string> {
  const bundle = await loadBundle(bundleDir, { verify: false });
  return prepareBaseModel({
    version: bundle.manifest.version,
    bundleDir,
    manifest: bundle.manifest,
    dataDir,
    signal: new AbortController().signal,
    emit: (e) => events.push(e),
  });
}

describe('full: the base model on the shared volume, as open_clip local-dir', () => {
  test('safetensors writer: reads back exactly (and as the bundle serves it)', async () => {
    const sd = readBundleStateDict(await loadBundle(randomBase));
    const file = path.join(root, 'rt.safetensors');
    await writeSafetensors(file, sd);
    const back = await readSafetensors(file);
    expect([...back.keys()].sort()).toEqual([...sd.keys()].sort());
    for (const [k, t] of sd) {
      expect(back.get(k)!.shape).toEqual(t.shape);
      expect(
        Buffer.from(back.get(k)!.data.buffer).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
      ).toBe(true);
    }
    const header = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect((8 + header) % 8).toBe(0); // tensor data aligned, as upstream writes it
  });

  test('a bundle with no checkpoint left (random-init, adapter) is exported from its own weights, once', async () => {
    const dataDir = path.join(root, 'data-export');
    const events: FineTuneMethodEvent[] = [];
    expect(baseWeightsSource((await loadBundle(randomBase)).manifest)).toEqual({ kind: 'bundle' });
    const dir = await prepare(randomBase, dataDir, events);
    expect(path.dirname(dir)).toBe(path.join(dataDir, 'base-models'));
    expect(events.map((e) => e.message)).toEqual([expect.stringMatching(/exporting the bundle's weights/)]);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'open_clip_config.json'), 'utf8'));
    const manifest = (await loadBundle(randomBase)).manifest;
    expect(config).toEqual({ model_cfg: manifest.model_cfg, preprocess_cfg: manifest.preprocess_cfg });
    const exported = await readSafetensors(path.join(dir, SAFETENSORS_WEIGHTS));
    const expected = readBundleStateDict(await loadBundle(randomBase));
    expect(exported.get('visual.conv1.weight')!.data).toEqual(expected.get('visual.conv1.weight')!.data);
    // Prepared once: the second job reuses the directory; no temporary directories are left.
    const again: FineTuneMethodEvent[] = [];
    expect(await prepare(randomBase, dataDir, again)).toBe(dir);
    expect(again).toEqual([]);
    expect(fs.readdirSync(path.join(dataDir, 'base-models'))).toEqual([path.basename(dir)]);
  });

  test('a bundle converted from a checkpoint: that checkpoint (hub safetensors linked, a torch file rewritten)', async () => {
    const cfg = (await loadBundle(randomBase)).manifest.model_cfg;
    const src = path.join(root, 'hub-cache', 'snap');
    fs.mkdirSync(src, { recursive: true });
    fs.writeFileSync(path.join(src, 'open_clip_config.json'), JSON.stringify({ model_cfg: cfg }));
    fs.copyFileSync(vocab, path.join(src, 'bpe_simple_vocab_16e6.txt.gz'));
    const sd = randomStateDict(cfg, 21);
    // As the hub cache keeps it: the snapshot's file is a symlink to a blob.
    fs.mkdirSync(path.join(root, 'hub-cache', 'blobs'));
    const blob = path.join(root, 'hub-cache', 'blobs', 'etag-1');
    await writeSafetensors(blob, sd);
    fs.symlinkSync(path.relative(src, blob), path.join(src, 'open_clip_model.safetensors'));
    await saveStateDict(path.join(src, 'epoch_3.pt'), sd, { trainer: true });

    const fromSt = path.join(root, 'models', 'from-st');
    await convertCheckpoint({ input: src, outDir: fromSt });
    const dataDir = path.join(root, 'data-ckpt');
    const events: FineTuneMethodEvent[] = [];
    const d1 = await prepare(fromSt, dataDir, events);
    expect(fs.lstatSync(path.join(d1, SAFETENSORS_WEIGHTS)).isFile()).toBe(true);
    expect(fs.statSync(path.join(d1, SAFETENSORS_WEIGHTS)).ino).toBe(fs.statSync(blob).ino);
    expect(events[0].message).toMatch(/linked .*open_clip_model\.safetensors for the trainer/);

    const fromPt = path.join(root, 'models', 'from-pt');
    await convertCheckpoint({
      input: path.join(src, 'epoch_3.pt'),
      config: path.join(src, 'open_clip_config.json'),
      vocab,
      outDir: fromPt,
      version: '2',
    });
    const ptEvents: FineTuneMethodEvent[] = [];
    const d2 = await prepare(fromPt, dataDir, ptEvents);
    expect(d2).not.toBe(d1);
    // A torch.save file (a trainer's epoch_N.pt: `module.` keys, optimizer state) becomes its state dict in safetensors.
    expect(ptEvents[0].message).toMatch(/rewriting the state dict of .*epoch_3\.pt as safetensors/);
    const rewritten = await readSafetensors(path.join(d2, SAFETENSORS_WEIGHTS));
    expect([...rewritten.keys()].sort()).toEqual([...sd.keys()].sort());
    expect(rewritten.get('text_projection')!.data).toEqual(sd.get('text_projection')!.data);

    // The checkpoint is gone since the conversion: the bundle's own weights instead.
    fs.rmSync(path.join(src, 'epoch_3.pt'));
    expect(baseWeightsSource((await loadBundle(fromPt)).manifest)).toEqual({ kind: 'bundle' });
  });
});

describe('full: preconditions at CreateFineTuneJob', () => {
  const storage = { pvcName: 'clipserve-data', mountPath: '/data' };

  test('a vocabulary open_clip_train does not tokenize with is FAILED_PRECONDITION with the reason', async () => {
    const demo = path.join(root, 'models', 'demo');
    await writeRandomBundle({ arch: 'tiny', seed: 1, outDir: demo });
    const m = createFullMethod({ kube: kube(), storage, image: 'x/trainer:1' });
    const plan = {
      hyperparameters: { batch_size: 2 },
      baseModel: { version: 'demo', bundleDir: demo },
      trainingPairs: 10,
    };
    expect(() => m.checkJob!(plan)).toThrow(FineTunePreconditionError);
    expect(() => m.checkJob!(plan)).toThrow(
      /has a \d+-token vocabulary; open_clip_train tokenizes with open_clip's CLIP BPE vocabulary \(49408 tokens\)/,
    );
    const err = fineTuneRpcError(new FineTunePreconditionError('x')) as RpcError;
    expect(err.code).toBe(Status.FAILED_PRECONDITION);
    expect((fineTuneRpcError(new FineTuneValidationError('x')) as RpcError).code).toBe(Status.INVALID_ARGUMENT);
  });

  test('no full batch after the validation split is INVALID_ARGUMENT; a separate validation set holds nothing out', () => {
    const m = createFullMethod({ kube: kube(), storage, image: 'x/trainer:1' });
    const base = { version: 'r', bundleDir: randomBase };
    expect(() =>
      m.checkJob!({ hyperparameters: { batch_size: 5, validation_split: 0.2 }, baseModel: base, trainingPairs: 5 }),
    ).toThrow(/4 training pairs make no full batch of 5 per GPU on 1 GPU/);
    expect(() =>
      m.checkJob!({
        hyperparameters: { batch_size: 5, validation_split: 0.2 },
        baseModel: base,
        trainingPairs: 5,
        validationPairs: 3,
      }),
    ).not.toThrow();
    expect(() =>
      m.checkJob!({ hyperparameters: { batch_size: 2, gpus_per_node: 4 }, baseModel: base, trainingPairs: 4 }),
    ).toThrow(/on 4 GPU\(s\)/);
    expect(() =>
      m.checkJob!({
        hyperparameters: {},
        baseModel: { version: 'gone', bundleDir: path.join(root, 'nope') },
        trainingPairs: 1000,
      }),
    ).toThrow(FineTunePreconditionError);
    // Without a cluster or an image: preconditions of the server, not of the request.
    expect(() =>
      createFullMethod({ kube: null, storage }).checkJob!({
        hyperparameters: {},
        baseModel: base,
        trainingPairs: 1000,
      }),
    ).toThrow(FineTunePreconditionError);
  });

  test('no error message points users at internal functions', () => {
    const sources = ['index.ts', 'base-model.ts', 'hyperparameters.ts', 'training-data.ts'].map((f) =>
      fs.readFileSync(path.join(__dirname, '..', '..', '..', 'server', 'src', 'finetune', 'full', f), 'utf8'),
    );
    for (const s of sources) expect(s).not.toMatch(/createFullMethod\(\{|trainerModel/);
  });
});

describe('full: pod options as serve configuration', () => {
  test('flags/environment strings and config-file JSON reach the training pod', () => {
    const c = resolveServeConfig({
      finetuneNodeSelector: 'nvidia.com/gpu.present=true,pool=train',
      finetuneTolerations: 'nvidia.com/gpu:NoSchedule,dedicated=training:NoExecute',
      finetuneImagePullSecrets: 'regcred, other-cred',
      finetuneShmSize: '32Gi',
      finetuneGpuResource: 'amd.com/gpu',
      finetuneServiceAccount: 'trainer',
      finetuneWorkersPerGpu: '8',
    });
    expect(c.finetuneNodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true', pool: 'train' });
    expect(c.finetuneTolerations).toEqual([
      { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
      { key: 'dedicated', operator: 'Equal', value: 'training', effect: 'NoExecute' },
    ]);
    expect(c.finetuneImagePullSecrets).toEqual(['regcred', 'other-cred']);
    expect(c.finetuneWorkersPerGpu).toBe(8);
    const { job } = buildTrainingManifests({
      jobId: 'ftjob-1',
      namespace: 'ns',
      image: 'x/trainer:1',
      hp: { nodes: 1, gpus_per_node: 2 },
      trainerArgs: [],
      storage: { pvcName: 'clipserve-data', mountPath: '/data' },
      pod: {
        gpuResource: c.finetuneGpuResource,
        nodeSelector: c.finetuneNodeSelector,
        tolerations: c.finetuneTolerations,
        imagePullSecrets: c.finetuneImagePullSecrets,
        shmSize: c.finetuneShmSize,
        serviceAccountName: c.finetuneServiceAccount,
      },
    });
    const pod = job.spec!.template.spec!;
    expect(pod.containers[0].resources!.limits!['amd.com/gpu']).toBe('2');
    expect(pod.containers[0].resources!.limits!['nvidia.com/gpu']).toBeUndefined();
    expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }, { name: 'other-cred' }]);
    expect(pod.serviceAccountName).toBe('trainer');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.volumes!.find((v) => v.name === 'dshm')!.emptyDir!.sizeLimit).toBe('32Gi');

    // JSON forms (a config file), "none", and the default toleration following the GPU resource.
    const j = resolveServeConfig({
      finetuneNodeSelector: { pool: 'gpu' },
      finetuneTolerations: [{ key: 'gpu', operator: 'Exists' }],
      finetuneImagePullSecrets: ['a'],
    });
    expect(j.finetuneNodeSelector).toEqual({ pool: 'gpu' });
    expect(j.finetuneTolerations).toEqual([{ key: 'gpu', operator: 'Exists' }]);
    expect(resolveServeConfig({ finetuneTolerations: 'none' }).finetuneTolerations).toEqual([]);
    expect(
      resolveServeConfig({ finetuneTolerations: '[{"key":"k","value":"v","effect":"NoSchedule"}]' })
        .finetuneTolerations,
    ).toEqual([{ key: 'k', operator: 'Equal', value: 'v', effect: 'NoSchedule' }]);
    const amd = buildTrainingManifests({
      jobId: 'j',
      namespace: 'ns',
      image: 'i',
      hp: { nodes: 1, gpus_per_node: 1 },
      trainerArgs: [],
      storage: { pvcName: 'p', mountPath: '/d' },
      pod: { gpuResource: 'amd.com/gpu' },
    });
    expect(amd.job.spec!.template.spec!.tolerations).toEqual([
      { key: 'amd.com/gpu', operator: 'Exists', effect: 'NoSchedule' },
    ]);
  });

  test.each([
    ['finetuneNodeSelector', 'nvidia.com/gpu.present', /is not key=value/],
    ['finetuneNodeSelector', 'bad key=x', /not a valid label key/],
    ['finetuneTolerations', 'k=v:Sometimes', /effect must be one of NoSchedule, PreferNoSchedule, NoExecute/],
    ['finetuneTolerations', '[{"key":"k","operator":"Exists","value":"v"}]', /operator Exists takes no value/],
    ['finetuneTolerations', '[{oops', /invalid JSON/],
    ['finetuneImagePullSecrets', 'Reg_Cred', /not a valid secret name/],
    ['finetuneShmSize', '16 GB', /Kubernetes quantity such as 16Gi/],
    ['finetuneGpuResource', 'gpu', /extended resource name such as nvidia.com\/gpu/],
    ['finetuneServiceAccount', 'Trainer!', /not a valid service account name/],
    ['finetuneWorkersPerGpu', '-1', /integer in \[0, 64\]/],
  ])('%s %j is refused at start, naming the flag', (key, value, message) => {
    const run = () => resolveServeConfig({ [key]: value });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(message);
    expect(run).toThrow(/--finetune-/);
  });
});
