/**
 * The `full` method's runner against a local HTTP server that answers like the Kubernetes API
 * server for batch/v1 Jobs, pods, pod logs and Services (127.0.0.1, ephemeral port), driven
 * through the real @kubernetes/client-node: a successful multi-node run (Job + rendezvous
 * Service, pod phases and logs into job events, the trainer's checkpoint converted into a bundle),
 * a failing Job (condition Failed), a pod that can never start, adoption of an existing Job after a
 * restart, and a cancel (the Job deleted with propagationPolicy Background within seconds).
 *
 * The simulated cluster plays the trainer too: when a Job reaches Complete, it writes what
 * open_clip_train writes (epoch_N.pt with the model under `module.`, results.jsonl) where the Job's
 * own --logs/--name/--epochs arguments say, so the test also proves the runner reads back what it
 * asked for.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { KubeConfig, V1Job, V1Pod } from '@kubernetes/client-node';
import { loadBundle } from '../../../server/src/model/bundle';
import { writeRandomBundle } from '../../../server/src/model/random-bundle';
import { randomStateDict } from '../../../server/src/model/random-init';
import {
  FineTuneCancelledError,
  type FineTuneJobContext,
  type FineTuneMethodEvent,
  type Hyperparameters,
} from '../../../server/src/finetune/method';
import {
  createFullMethod,
  SHUTDOWN_ABORT_REASON,
  TrainingJobFailedError,
  trainingJobName,
} from '../../../server/src/finetune/full';
import { kubeClient } from '../../../server/src/finetune/full/kube-client';
import { writeClipSizedVocab } from '../../helpers/clip-vocab';
import { readJsonBody, sendJson, sendStatus } from '../../helpers/local-kube';
import { validateObjects, type K8sObject } from '../../helpers/k8s-schema';
import { saveStateDict } from '../../helpers/torch-save';

const TOKEN = 'test-token-123';

type Scenario = 'succeed' | 'fail' | 'run-forever' | 'bad-image';

interface Call {
  method: string;
  path: string;
  query: URLSearchParams;
  body?: unknown;
}

/** What each poll of the Job sees, one step per GET of the Job (the last one repeats). */
type Phase = 'Pending' | 'Running' | 'Succeeded' | 'Failed';

class FakeKubeApi {
  readonly calls: Call[] = [];
  readonly jobs = new Map<string, V1Job & { _gets: number }>();
  readonly services = new Map<string, unknown>();
  private server!: http.Server;
  private openLogs = new Set<http.ServerResponse>();
  port = 0;
  /** Per scenario: the pod phase after the n-th GET of the Job. */
  scenario: Scenario = 'succeed';
  /** Trainer log lines each pod prints. */
  logLines: string[] = [];
  /** The simulated trainer's last act; the Job reports Complete once it is done. */
  onComplete?: (job: V1Job) => Promise<void>;

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const r of this.openLogs) r.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  reset(scenario: Scenario, logLines: string[]): void {
    this.calls.length = 0;
    this.jobs.clear();
    this.services.clear();
    this.scenario = scenario;
    this.logLines = logLines;
  }

  kubeConfig(): KubeConfig {
    const kc = new (kubeClient().KubeConfig)();
    kc.loadFromOptions({
      // client-node refuses plain http unless TLS verification is explicitly off (as for kubectl proxy).
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'clipserve', token: TOKEN }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'clipserve', namespace: 'training' }],
      currentContext: 'fake',
    });
    return kc;
  }

  private phase(job: V1Job & { _gets: number }): Phase {
    const script: Record<Scenario, Phase[]> = {
      succeed: ['Pending', 'Running', 'Running', 'Succeeded'],
      fail: ['Pending', 'Running', 'Failed'],
      'run-forever': ['Pending', 'Running'],
      'bad-image': ['Pending'],
    };
    const s = script[this.scenario];
    return s[Math.min(job._gets, s.length) - 1] ?? 'Pending';
  }

  private pods(job: V1Job & { _gets: number }): V1Pod[] {
    const name = job.metadata!.name!;
    const n = job.spec!.completions ?? 1;
    const phase = this.phase(job);
    return Array.from({ length: n }, (_, i): V1Pod => {
      const container =
        phase === 'Running'
          ? {
              name: 'trainer',
              ready: true,
              restartCount: 0,
              image: '',
              imageID: '',
              state: { running: { startedAt: new Date() } },
            }
          : phase === 'Succeeded'
            ? {
                name: 'trainer',
                ready: false,
                restartCount: 0,
                image: '',
                imageID: '',
                state: { terminated: { exitCode: 0, reason: 'Completed', startedAt: new Date() } },
              }
            : phase === 'Failed'
              ? {
                  name: 'trainer',
                  ready: false,
                  restartCount: 0,
                  image: '',
                  imageID: '',
                  state: { terminated: { exitCode: 1, reason: 'Error', startedAt: new Date() } },
                }
              : this.scenario === 'bad-image'
                ? {
                    name: 'trainer',
                    ready: false,
                    restartCount: 0,
                    image: '',
                    imageID: '',
                    state: {
                      waiting: { reason: 'InvalidImageName', message: 'Failed to apply default image tag "BAD IMAGE"' },
                    },
                  }
                : {
                    name: 'trainer',
                    ready: false,
                    restartCount: 0,
                    image: '',
                    imageID: '',
                    state: { waiting: { reason: 'ContainerCreating' } },
                  };
      return {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: `${name}-${i}-abcde`,
          namespace: job.metadata!.namespace,
          labels: { 'job-name': name, ...job.spec!.template.metadata!.labels },
        },
        status: { phase, containerStatuses: [container] },
      };
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url!, 'http://x');
    const body = (await readJsonBody(req)) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    this.calls.push({ method: req.method!, path: url.pathname, query: url.searchParams, body });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return sendStatus(res, 401, 'Unauthorized', 'Unauthorized');

    let m: RegExpExecArray | null;
    if ((m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs$/.exec(url.pathname)) && req.method === 'POST') {
      const name = body.metadata.name as string;
      if (this.jobs.has(name)) return sendStatus(res, 409, 'AlreadyExists', `jobs.batch "${name}" already exists`);
      const job = {
        ...body,
        metadata: {
          ...body.metadata,
          namespace: m[1],
          uid: `uid-${name}`,
          creationTimestamp: new Date().toISOString(),
        },
        status: {},
        _gets: 0,
      };
      this.jobs.set(name, job);
      const { _gets, ...out } = job;
      return sendJson(res, 201, out);
    }
    if ((m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs\/([^/]+)$/.exec(url.pathname))) {
      const job = this.jobs.get(m[2]);
      if (!job) return sendStatus(res, 404, 'NotFound', `jobs.batch "${m[2]}" not found`);
      if (req.method === 'DELETE') {
        this.jobs.delete(m[2]);
        for (const r of this.openLogs) r.end();
        return sendJson(res, 200, {
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Success',
          details: { name: m[2], group: 'batch', kind: 'jobs', uid: job.metadata!.uid },
        });
      }
      job._gets++;
      const phase = this.phase(job);
      const now = new Date().toISOString();
      if (phase === 'Succeeded' && !job.status!.conditions) {
        await this.onComplete?.(job);
        job.status = {
          succeeded: job.spec!.completions,
          conditions: [
            { type: 'SuccessCriteriaMet', status: 'True' },
            { type: 'Complete', status: 'True', lastTransitionTime: new Date(now) },
          ],
        };
      } else if (phase === 'Failed') {
        job.status = {
          failed: 1,
          conditions: [
            {
              type: 'Failed',
              status: 'True',
              reason: 'BackoffLimitExceeded',
              message: 'Job has reached the specified backoff limit',
            },
          ],
        };
      } else if (phase === 'Running') {
        job.status = { active: job.spec!.completions, startTime: new Date(now) };
      }
      const { _gets, ...out } = job;
      return sendJson(res, 200, out);
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname)) && req.method === 'GET') {
      const selector = url.searchParams.get('labelSelector') ?? '';
      const jm = /^job-name=(.+)$/.exec(selector);
      const job = jm ? this.jobs.get(jm[1]) : undefined;
      return sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: job ? this.pods(job) : [] });
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(url.pathname)) && req.method === 'GET') {
      const jobName = m[2].replace(/-\d+-abcde$/, '');
      const job = this.jobs.get(jobName);
      if (!job) return sendStatus(res, 404, 'NotFound', `pods "${m[2]}" not found`);
      if (url.searchParams.get('container') !== 'trainer')
        return sendStatus(res, 400, 'BadRequest', 'container name required');
      const ts = url.searchParams.get('timestamps') === 'true';
      const since = url.searchParams.get('sinceTime');
      res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
      const base = Date.parse('2026-11-27T09:00:00Z');
      this.logLines.forEach((line, i) => {
        const t = new Date(base + i * 1000).toISOString().replace('Z', '000000Z');
        if (since && t < since) return;
        res.write(`${ts ? `${t} ` : ''}${line}\n`);
      });
      // follow=true: the stream stays open while the container runs.
      const phase = this.phase(job);
      if (url.searchParams.get('follow') !== 'true' || phase === 'Succeeded' || phase === 'Failed')
        return void res.end();
      this.openLogs.add(res);
      const timer = setInterval(() => {
        const current = this.jobs.get(jobName);
        if (!current || ['Succeeded', 'Failed'].includes(this.phase(current))) {
          clearInterval(timer);
          this.openLogs.delete(res);
          res.end();
        }
      }, 10);
      res.on('close', () => {
        clearInterval(timer);
        this.openLogs.delete(res);
      });
      return;
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/services$/.exec(url.pathname)) && req.method === 'POST') {
      const name = body.metadata.name as string;
      if (this.services.has(name)) return sendStatus(res, 409, 'AlreadyExists', `services "${name}" already exists`);
      this.services.set(name, body);
      return sendJson(res, 201, body);
    }
    return sendStatus(
      res,
      404,
      'NotFound',
      `the server could not find the requested resource (${req.method} ${url.pathname})`,
    );
  }
}

describe('full: the job runner against a fake Kubernetes API', () => {
  const api = new FakeKubeApi();
  let root: string;
  let baseBundle: string;
  let datasetDir: string;

  beforeAll(async () => {
    await api.start();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ft-full-kube-'));
    baseBundle = path.join(root, 'models', 'base');
    const vocab = path.join(root, 'clip_vocab.txt.gz');
    writeClipSizedVocab(vocab);
    await writeRandomBundle({ arch: 'tiny', seed: 3, outDir: baseBundle, name: 'tiny-base', vocabFile: vocab });
    datasetDir = path.join(root, 'datasets', 'ds-1');
    fs.mkdirSync(path.join(datasetDir, 'images'), { recursive: true });
    const rows = ['filepath\ttitle'];
    for (let i = 0; i < 10; i++) {
      fs.writeFileSync(path.join(datasetDir, 'images', `${i}.png`), `png ${i}`);
      rows.push(`images/${i}.png\ticon number ${i}`);
    }
    fs.writeFileSync(path.join(datasetDir, 'pairs.tsv'), rows.join('\n') + '\n');

    const modelCfg = (await loadBundle(baseBundle, { verify: false })).manifest.model_cfg;
    // What open_clip_train leaves behind when it finishes.
    api.onComplete = async (job) => {
      const args = job.spec!.template.spec!.containers[0].args!;
      const arg = (flag: string): string => args[args.indexOf(flag) + 1];
      const dir = path.join(arg('--logs'), arg('--name'), 'checkpoints');
      fs.mkdirSync(dir, { recursive: true });
      const epochs = Number(arg('--epochs'));
      await saveStateDict(path.join(dir, `epoch_${epochs}.pt`), randomStateDict(modelCfg, 99), { trainer: true });
      fs.writeFileSync(
        path.join(dir, 'results.jsonl'),
        JSON.stringify({
          'image_to_text_R@1': 0.5,
          'text_to_image_R@1': 0.5,
          clip_val_loss: 0.7,
          epoch: epochs,
          num_samples: 2,
        }) + '\n',
      );
      checkpointWritten = true;
    };
  });

  afterAll(async () => {
    await api.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  let checkpointWritten = false;

  function context(
    jobId: string,
    hp: Hyperparameters,
    signal: AbortSignal,
    events: FineTuneMethodEvent[],
  ): FineTuneJobContext {
    const workDir = path.join(root, 'jobs', jobId);
    fs.mkdirSync(workDir, { recursive: true });
    return {
      jobId,
      hyperparameters: hp,
      datasetDir,
      workDir,
      baseModel: { version: 'base-1', bundleDir: baseBundle },
      outputVersion: `tiny-base-${jobId}`,
      signal,
      emit: (e) => events.push(e),
    };
  }

  function method(): ReturnType<typeof createFullMethod> {
    return createFullMethod({
      kube: api.kubeConfig(),
      image: 'registry.example.com/open-clip-train:3.1.0',
      storage: { pvcName: 'clipserve-data', mountPath: root },
      pollIntervalMs: 20,
      logDrainMs: 2000,
    });
  }

  const TRAIN_LINES = [
    'Starting training',
    '2026-11-27,09:00:01 | INFO | Train Epoch: 0 [2/8 (50%)] Data (t): 0.100 Batch (t): 1.000, 2.00/s, 1.00/s/gpu LR: 0.000005 Logit Scale: 100.000 Contrastive_loss: 1.2500 (1.2500) Loss: 1.2500 (1.2500)',
    '2026-11-27,09:00:02 | INFO | Eval Epoch: 1 image_to_text_R@1: 0.5000\ttext_to_image_R@1: 0.5000\tclip_val_loss: 0.7000\tepoch: 1.0000\tnum_samples: 2.0000',
  ];

  test('success on 2 nodes: Job + rendezvous Service, events, and a converted bundle', async () => {
    api.reset('succeed', TRAIN_LINES);
    checkpointWritten = false;
    const events: FineTuneMethodEvent[] = [];
    const m = method();
    const hp: Hyperparameters = {
      nodes: 2,
      gpus_per_node: 1,
      batch_size: 2,
      epochs: 2,
      validation_split: 0.2,
      namespace: 'training',
    };
    m.validate(hp);
    const result = await m.run(context('ftjob-ok1', hp, new AbortController().signal, events));
    expect(checkpointWritten).toBe(true);

    const jobName = trainingJobName('ftjob-ok1');
    // The calls a real API server would have seen, in the order that matters.
    const posted = api.calls.find((c) => c.method === 'POST' && c.path === '/apis/batch/v1/namespaces/training/jobs')!;
    expect(posted).toBeDefined();
    expect(validateObjects([posted.body as K8sObject])).toEqual([]);
    const svc = api.calls.find((c) => c.method === 'POST' && c.path === '/api/v1/namespaces/training/services')!;
    expect(svc).toBeDefined();
    expect(validateObjects([svc.body as K8sObject])).toEqual([]);
    expect((svc.body as { metadata: { ownerReferences: unknown[] } }).metadata.ownerReferences).toEqual([
      { apiVersion: 'batch/v1', kind: 'Job', name: jobName, uid: `uid-${jobName}` },
    ]);
    expect(
      api.calls.some((c) => c.method === 'GET' && c.path === `/apis/batch/v1/namespaces/training/jobs/${jobName}`),
    ).toBe(true);
    const podLists = api.calls.filter((c) => c.path === '/api/v1/namespaces/training/pods');
    expect(podLists.length).toBeGreaterThan(0);
    for (const c of podLists) expect(c.query.get('labelSelector')).toBe(`job-name=${jobName}`);
    const logs = api.calls.filter((c) => /\/pods\/[^/]+\/log$/.test(c.path));
    expect(new Set(logs.map((c) => c.path)).size).toBe(2);
    for (const c of logs) expect(c.query.get('follow')).toBe('true');
    expect(api.calls.some((c) => c.method === 'DELETE')).toBe(false);

    // Pod phases and log lines became events; trainer lines became step / epoch events.
    const messages = events.map((e) => e.message ?? '');
    expect(messages).toContain(`created training Job training/${jobName}`);
    expect(messages.some((x) => /^pod .*-0-abcde: Pending/.test(x))).toBe(true);
    expect(messages.some((x) => /^pod .*-0-abcde: Running/.test(x))).toBe(true);
    expect(messages.some((x) => /^pod .*-1-abcde: Succeeded \(exit 0, Completed\)/.test(x))).toBe(true);
    // Each pod's log, each line once (the follow that resumed after the container exited skips what it had).
    expect(events.filter((e) => e.type === 'log' && e.message === 'Starting training').length).toBe(2);
    const steps = events.filter((e) => e.type === 'step');
    // 8 training pairs over 2 ranks, 2 per GPU: 2 steps per epoch, 4 in all; "2/8" is step 1.
    expect(steps[0].data).toEqual({ step: 1, total_steps: 4, epoch: 0, loss: 1.25, learning_rate: 0.000005 });
    const epochs = events.filter((e) => e.type === 'epoch');
    expect(epochs[0].data).toEqual({
      epoch: 1,
      metrics: { 'image_to_text_R@1': 0.5, 'text_to_image_R@1': 0.5, clip_val_loss: 0.7 },
    });

    // The checkpoint became a loadable bundle with the base model's vocabulary and provenance.
    expect(result.bundleDir).toBe(path.join(root, 'jobs', 'ftjob-ok1', 'bundle'));
    const bundle = await loadBundle(result.bundleDir);
    expect(bundle.manifest.name).toBe('tiny-base');
    expect(bundle.manifest.version).toBe('tiny-base-ftjob-ok1');
    expect(bundle.manifest.source).toMatchObject({
      fine_tune_job: 'ftjob-ok1',
      fine_tune_method: 'full',
      base_version: 'base-1',
    });
    expect(result.metrics).toEqual({ 'image_to_text_R@1': 0.5, 'text_to_image_R@1': 0.5, clip_val_loss: 0.7 });
    // The trainer got the split the method wrote.
    const args = (posted.body as V1Job).spec!.template.spec!.containers[0].args!;
    const train = fs
      .readFileSync(args[args.indexOf('--train-data') + 1], 'utf8')
      .trim()
      .split('\n');
    expect(train.length - 1).toBe(8);
    expect(train[1].split('\t')[0]).toMatch(
      new RegExp(`^${datasetDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/images/\\d\\.png$`),
    );
  });

  test('a model that `full` produced can be the base of the next: the trainer starts from its checkpoint', async () => {
    const firstBundle = path.join(root, 'jobs', 'ftjob-ok1', 'bundle');
    const recorded = (await loadBundle(firstBundle, { verify: false })).manifest.source.weights as string;
    expect(recorded).toBe(path.join(root, 'jobs', 'ftjob-ok1', 'trainer', 'run', 'checkpoints', 'epoch_2.pt'));
    api.reset('succeed', []);
    const ctx = context('ftjob-next', { epochs: 1, batch_size: 2 }, new AbortController().signal, []);
    await method().run({ ...ctx, baseModel: { version: 'tiny-base-ftjob-ok1', bundleDir: firstBundle } });
    const args = (api.calls.find((c) => c.method === 'POST')!.body as V1Job).spec!.template.spec!.containers[0].args!;
    const model = args[args.indexOf('--model') + 1];
    expect(model).toMatch(/^local-dir:/);
    const dir = model.slice('local-dir:'.length);
    expect(path.dirname(dir)).toBe(path.join(root, 'base-models'));
    // The trainer's own checkpoint's weights, on the shared volume under the name open_clip's loader looks for.
    expect(fs.existsSync(path.join(dir, 'open_clip_model.safetensors'))).toBe(true);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'open_clip_config.json'), 'utf8'));
    expect(config.model_cfg).toEqual((await loadBundle(firstBundle, { verify: false })).manifest.model_cfg);
  });

  test('a failing Job (condition Failed) rejects with the reason, the exit and the last log lines', async () => {
    api.reset('fail', ['Starting training', 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB']);
    const events: FineTuneMethodEvent[] = [];
    const run = method().run(
      context('ftjob-bad1', { epochs: 1, batch_size: 2, namespace: 'training' }, new AbortController().signal, events),
    );
    await expect(run).rejects.toThrow(TrainingJobFailedError);
    await expect(run).rejects.toThrow(
      /failed: BackoffLimitExceeded: Job has reached the specified backoff limit; pod .*: exit 1, Error; last log lines: .*CUDA out of memory/,
    );
    // A failed Job is left for inspection (its TTL removes it); nothing is deleted.
    expect(api.calls.some((c) => c.method === 'DELETE')).toBe(false);
    expect(
      events.some((e) => e.message === 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'),
    ).toBe(true);
  });

  test('a pod that can never start fails the job and deletes the Job', async () => {
    api.reset('bad-image', []);
    const run = method().run(context('ftjob-img1', { epochs: 1, batch_size: 2 }, new AbortController().signal, []));
    await expect(run).rejects.toThrow(/cannot start: InvalidImageName/);
    const del = api.calls.find((c) => c.method === 'DELETE');
    expect(del?.query.get('propagationPolicy')).toBe('Background');
    // Namespace from the kubeconfig context when the request names none.
    expect(del?.path).toBe(`/apis/batch/v1/namespaces/training/jobs/${trainingJobName('ftjob-img1')}`);
  });

  test('cancel deletes the Job (propagationPolicy Background) within seconds', async () => {
    api.reset('run-forever', ['Starting training']);
    const events: FineTuneMethodEvent[] = [];
    const ac = new AbortController();
    const run = method().run(context('ftjob-cxl1', { epochs: 1, batch_size: 2 }, ac.signal, events));
    // Wait until the trainer is running and its log is being followed.
    const t0 = Date.now();
    while (!events.some((e) => e.message === 'Starting training')) {
      if (Date.now() - t0 > 10_000) throw new Error('the trainer never started');
      await new Promise((r) => setTimeout(r, 10));
    }
    const cancelledAt = Date.now();
    ac.abort();
    await expect(run).rejects.toThrow(FineTuneCancelledError);
    expect(Date.now() - cancelledAt).toBeLessThan(3000);
    const del = api.calls.filter((c) => c.method === 'DELETE');
    expect(del).toHaveLength(1);
    expect(del[0].path).toBe(`/apis/batch/v1/namespaces/training/jobs/${trainingJobName('ftjob-cxl1')}`);
    expect(del[0].query.get('propagationPolicy')).toBe('Background');
    expect(api.jobs.size).toBe(0);
    expect(events.some((e) => e.message === `deleted training Job training/${trainingJobName('ftjob-cxl1')}`)).toBe(
      true,
    );
  });

  test('a server shutdown (abort reason "shutdown") leaves the Job running for the restarted server', async () => {
    api.reset('run-forever', ['Starting training']);
    const events: FineTuneMethodEvent[] = [];
    const ac = new AbortController();
    const run = method().run(context('ftjob-stop1', { epochs: 1, batch_size: 2 }, ac.signal, events));
    const t0 = Date.now();
    while (!events.some((e) => e.message === 'Starting training')) {
      if (Date.now() - t0 > 10_000) throw new Error('the trainer never started');
      await new Promise((r) => setTimeout(r, 10));
    }
    ac.abort(SHUTDOWN_ABORT_REASON);
    await expect(run).rejects.toThrow(FineTuneCancelledError);
    expect(api.calls.some((c) => c.method === 'DELETE')).toBe(false);
    expect(api.jobs.has(trainingJobName('ftjob-stop1'))).toBe(true);
    expect(events.some((e) => /keeps running and is followed again after the restart/.test(e.message ?? ''))).toBe(
      true,
    );
  });

  test("after a restart, the existing Job of the same fine-tune is followed, not recreated; a stranger's is refused", async () => {
    api.reset('succeed', ['resumed']);
    const jobName = trainingJobName('ftjob-adopt');
    const existing = {
      metadata: { name: jobName, annotations: { 'clipserve.io/finetune-job-id': 'ftjob-adopt' } },
      spec: { completions: 1, template: { metadata: { labels: {} }, spec: { containers: [] } } },
    };
    // The Job as the first run created it (same args: the simulated trainer reads them).
    const events: FineTuneMethodEvent[] = [];
    const first = method().run(
      context('ftjob-adopt', { epochs: 1, batch_size: 2 }, new AbortController().signal, events),
    );
    await first;
    const created = api.calls.find((c) => c.method === 'POST')!.body as V1Job;
    api.reset('succeed', ['resumed']);
    api.jobs.set(jobName, {
      ...created,
      metadata: { ...created.metadata, uid: 'u1' },
      status: {},
      _gets: 0,
    } as V1Job & { _gets: number });
    const again: FineTuneMethodEvent[] = [];
    const result = await method().run(
      context('ftjob-adopt', { epochs: 1, batch_size: 2 }, new AbortController().signal, again),
    );
    expect(again.some((e) => e.message === `following the existing training Job training/${jobName}`)).toBe(true);
    expect(api.calls.filter((c) => c.method === 'POST')).toHaveLength(1); // the 409'd create
    expect(fs.existsSync(path.join(result.bundleDir, 'clipserve.json'))).toBe(true);

    api.reset('succeed', []);
    api.jobs.set(jobName, {
      ...existing,
      metadata: { ...existing.metadata, annotations: { 'clipserve.io/finetune-job-id': 'someone-else' } },
      _gets: 0,
    } as unknown as V1Job & { _gets: number });
    await expect(
      method().run(context('ftjob-adopt', { epochs: 1, batch_size: 2 }, new AbortController().signal, [])),
    ).rejects.toThrow(/already exists and does not belong/);
  });

  test('paths off the shared volume and too few pairs for a batch are refused before anything is submitted', async () => {
    api.reset('succeed', []);
    const ctx = context('ftjob-vol1', {}, new AbortController().signal, []);
    await expect(method().run({ ...ctx, datasetDir: os.tmpdir() })).rejects.toThrow(
      /not on the volume shared with the trainer/,
    );
    await expect(method().run({ ...ctx, hyperparameters: { batch_size: 64 } })).rejects.toThrow(
      /make no full batch of 64/,
    );
    expect(api.calls).toHaveLength(0);
  });
});
