/**
 * deploy/k8s: every kustomization renders with the real kustomize (kubectl kustomize), every
 * rendered object is valid against the Kubernetes API / prometheus-operator CRD schemas (unknown
 * fields included), and the objects agree with each other and with the image (ports, selectors,
 * drain budget, RBAC, security). The negative cases at the end break one thing at a time and
 * require the matching check to notice.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { DockerfileParser } from 'dockerfile-ast';
import { K8sObject, schemaErrors, unknownFieldErrors, validateObjects } from '../helpers/k8s-schema';
import { buildTrainingManifests } from '../../server/src/finetune/full/manifests';
import { configFromEnv, resolveServeConfig } from '../../server/src/serve/config';
import {
  checkDrain,
  checkHpa,
  checkPdbAndNetworkPolicy,
  checkPodSecurity,
  checkProbes,
  checkRbac,
  checkServerPorts,
  checkServerConfig,
  checkServiceMonitor,
  checkServices,
  checkVolumeSources,
  crossReferenceProblems,
  effectiveOption,
  expandKubeletVars,
  ofKind,
  selectorMatches,
  serverContainer,
  theDeployment,
} from '../helpers/k8s-schema-xref';

const REPO = path.resolve(__dirname, '..', '..');
const K8S = path.join(REPO, 'deploy', 'k8s');
const OVERLAYS_DIR = path.join(K8S, 'overlays');
const SECRETS_DIR = path.join(K8S, 'secrets');
const TOOLS_DIR = path.join(K8S, 'tools');
const DOCKERFILE = path.join(REPO, 'deploy', 'docker', 'Dockerfile');

/** kubectl with kustomize v5 (kubectl >= 1.27), or why there is none. */
function findKubectl(): { bin: string; version: string } | { missing: string } {
  const bin = process.env.KUBECTL ?? 'kubectl';
  let out: string;
  try {
    out = execFileSync(bin, ['version', '--client'], {
      encoding: 'utf8',
      timeout: 20_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    return { missing: `${bin} not runnable (${(err as Error).message.split('\n')[0]})` };
  }
  const kustomize = out.match(/Kustomize Version: v(\d+)\.[^\s]*/);
  if (!kustomize) return { missing: `${bin} has no built-in kustomize:\n${out}` };
  if (Number(kustomize[1]) < 5)
    return { missing: `${bin} embeds kustomize ${kustomize[0]}, need v5+ (kubectl >= 1.27)` };
  return { bin, version: out.replace(/\s+/g, ' ').trim() };
}

function parseYamlDocs(text: string, where: string): K8sObject[] {
  return parseAllDocuments(text).flatMap((doc) => {
    if (doc.errors.length) throw new Error(`${where}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const js = doc.toJS() as K8sObject | null;
    return js ? [js] : [];
  });
}

/** The Dockerfile's final USER uid for the serving images, so the pods run as the image intends. */
function imageUid(): number {
  const df = DockerfileParser.parse(fs.readFileSync(DOCKERFILE, 'utf8'));
  const users = df
    .getInstructions()
    .filter((i) => i.getKeyword() === 'USER')
    .map((i) => (i.getArgumentsContent() ?? '').split(':')[0]);
  const uids = new Set(users);
  if (uids.size !== 1) throw new Error(`Dockerfile stages disagree on USER: ${[...uids].join(', ')}`);
  return Number(users[0]);
}

const secretTemplates: K8sObject[] = fs
  .readdirSync(SECRETS_DIR)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseYamlDocs(fs.readFileSync(path.join(SECRETS_DIR, f), 'utf8'), f));

const kustomizations = [
  { name: 'base', dir: path.join(K8S, 'base') },
  ...fs
    .readdirSync(OVERLAYS_DIR)
    .filter((d) => fs.existsSync(path.join(OVERLAYS_DIR, d, 'kustomization.yaml')))
    .map((d) => ({ name: `overlays/${d}`, dir: path.join(OVERLAYS_DIR, d) })),
];

const kubectl = findKubectl();

const toolManifests: K8sObject[] = fs
  .readdirSync(TOOLS_DIR)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseYamlDocs(fs.readFileSync(path.join(TOOLS_DIR, f), 'utf8'), f));

describe('deploy/k8s standalone manifests (no kubectl needed)', () => {
  test('secret templates are valid Secrets, never part of a kustomization', () => {
    expect(secretTemplates.map((s) => s.metadata?.name).sort()).toEqual([
      'clipserve-api-keys',
      'clipserve-database',
      'clipserve-tls',
    ]);
    expect(validateObjects(secretTemplates)).toEqual([]);
    for (const k of kustomizations) {
      const text = fs.readFileSync(path.join(k.dir, 'kustomization.yaml'), 'utf8');
      expect(text).not.toMatch(/secrets\//);
    }
  });

  test('the model-loader pod is valid and passes the restricted Pod Security level', () => {
    expect(toolManifests.map((o) => o.kind)).toEqual(['Pod']);
    expect(validateObjects(toolManifests)).toEqual([]);
    // Reuse the Deployment checks on a Deployment-shaped wrapper of the pod.
    const pod = toolManifests[0] as K8sObject & { spec: Record<string, unknown> };
    const asDeployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: pod.metadata,
      spec: { template: { metadata: pod.metadata, spec: pod.spec } },
    };
    expect(checkPodSecurity([asDeployment], imageUid())).toEqual([]);
  });

  test('the overlays set are cpu, gpu and the PostgreSQL trial', () => {
    expect(kustomizations.map((k) => k.name).sort()).toEqual([
      'base',
      'overlays/cpu',
      'overlays/gpu',
      'overlays/postgres-trial',
    ]);
  });
});

if ('missing' in kubectl) {
  const message =
    `kubectl with kustomize v5 is required to render deploy/k8s: ${kubectl.missing}. ` +
    'Install it with `bash deploy/ci/install-kubectl.sh` (.ci/run does).';
  if (process.env.CI) {
    test('kubectl with kustomize v5 is installed (required in CI)', () => {
      throw new Error(message);
    });
  } else {
    console.warn(`\n!!! SKIPPING deploy/k8s rendering tests: ${message} !!!\n`);
    test.skip('deploy/k8s rendering (kubectl missing)', () => undefined);
  }
} else {
  const rendered = new Map<string, K8sObject[]>();
  const render = (name: string): K8sObject[] => {
    const cached = rendered.get(name);
    if (cached) return cached;
    const k = kustomizations.find((x) => x.name === name)!;
    const out = execFileSync(kubectl.bin, ['kustomize', k.dir], {
      encoding: 'utf8',
      timeout: 60_000,
      maxBuffer: 16 << 20,
    });
    const objects = parseYamlDocs(out, name);
    rendered.set(name, objects);
    return objects;
  };
  const clone = (name: string): K8sObject[] => JSON.parse(JSON.stringify(render(name))) as K8sObject[];
  /** The trial database's objects (overlays/postgres-trial), checked on their own below. */
  const isDatabase = (o: K8sObject): boolean =>
    (o.metadata?.labels as Record<string, string> | undefined)?.['app.kubernetes.io/component'] === 'database' ||
    /^clipserve-(postgres|database)-/.test(o.metadata?.name ?? '');
  const serverSide = (name: string): K8sObject[] => render(name).filter((o) => !isDatabase(o));
  const TRIAL = 'overlays/postgres-trial';

  describe.each(kustomizations.map((k) => k.name))(`kustomize %s (${kubectl.version})`, (name) => {
    test('renders, and every object is valid against the API schemas, with no unknown fields', () => {
      const objects = render(name);
      expect(objects.length).toBeGreaterThan(0);
      expect(validateObjects(objects)).toEqual([]);
    });

    test('holds every object the deployment needs', () => {
      const kinds = serverSide(name).map((o) => o.kind);
      const count = (k: string): number => kinds.filter((x) => x === k).length;
      expect({
        Namespace: count('Namespace'),
        Deployment: count('Deployment'),
        Service: count('Service'),
        HorizontalPodAutoscaler: count('HorizontalPodAutoscaler'),
        PodDisruptionBudget: count('PodDisruptionBudget'),
        ServiceMonitor: count('ServiceMonitor'),
        NetworkPolicy: count('NetworkPolicy'),
        ConfigMap: count('ConfigMap'),
        PersistentVolumeClaim: count('PersistentVolumeClaim'),
        ServiceAccount: count('ServiceAccount'),
        Role: count('Role'),
        RoleBinding: count('RoleBinding'),
      }).toEqual({
        Namespace: 1,
        Deployment: 1,
        Service: 2,
        HorizontalPodAutoscaler: 1,
        PodDisruptionBudget: 1,
        ServiceMonitor: 1,
        NetworkPolicy: 1,
        ConfigMap: 1,
        PersistentVolumeClaim: 2,
        ServiceAccount: 1,
        Role: 1,
        RoleBinding: 1,
      });
    });

    test('cross-references agree (ports, selectors, targets, drain, RBAC, security, volumes, Secrets)', () => {
      // The trial overlay brings its own clipserve-database Secret; the others read the template's.
      const objects =
        name === TRIAL ? [...serverSide(name), ...render(name).filter((o) => o.kind === 'Secret')] : serverSide(name);
      const templates =
        name === TRIAL ? secretTemplates.filter((t) => t.metadata?.name !== 'clipserve-database') : secretTemplates;
      expect(crossReferenceProblems(objects, templates, imageUid())).toEqual([]);
    });

    test('the server reads the database URL from Secret clipserve-database, never from a flag or the ConfigMap', () => {
      const c = serverContainer(theDeployment(render(name)))!;
      const env = (c.env ?? []).find((e) => e.name === 'CLIPSERVE_DATABASE_URL') as
        { valueFrom?: { secretKeyRef?: { name: string; key: string } } } | undefined;
      expect(env?.valueFrom?.secretKeyRef?.name).toMatch(
        name === TRIAL ? /^clipserve-database-\w+$/ : /^clipserve-database$/,
      );
      expect(env?.valueFrom?.secretKeyRef?.key).toBe('url');
      expect((c.args ?? []).some((a) => a.startsWith('--database-url'))).toBe(false);
      for (const cm of ofKind(render(name), 'ConfigMap'))
        expect(Object.keys((cm as { data?: object }).data ?? {})).not.toContain('CLIPSERVE_DATABASE_URL');
    });

    test('files the server reads from Secrets are keys of those Secrets', () => {
      const objects = render(name);
      const d = theDeployment(objects);
      const spec = (
        d.spec as { template: { spec: { volumes: Array<{ name: string; secret?: { secretName: string } }> } } }
      ).template.spec;
      const c = serverContainer(d)!;
      const problems: string[] = [];
      for (const arg of c.args ?? []) {
        const file = arg.split('=')[1];
        if (!file?.startsWith('/')) continue;
        const mount = (c.volumeMounts ?? []).find((m) => file.startsWith(m.mountPath + '/'));
        const secretName = spec.volumes.find((v) => v.name === mount?.name)?.secret?.secretName;
        if (!mount || !secretName) continue;
        const template = secretTemplates.find((s) => s.metadata?.name === secretName) as
          (K8sObject & { stringData?: object; data?: object }) | undefined;
        const keys = Object.keys({ ...(template?.stringData ?? {}), ...(template?.data ?? {}) });
        const key = file.slice(mount.mountPath.length + 1);
        if (!keys.includes(key))
          problems.push(`${arg}: Secret ${secretName} template has no key ${key} (has ${keys.join(', ')})`);
      }
      expect(problems).toEqual([]);
    });
  });

  describe('overlay specifics', () => {
    const provider = (objects: K8sObject[]): string | undefined =>
      effectiveOption(objects, serverContainer(theDeployment(objects))!, '--provider', 'CLIPSERVE_PROVIDER');
    const podSpecOf = (objects: K8sObject[]) =>
      (
        theDeployment(objects).spec as {
          template: {
            spec: {
              nodeSelector?: Record<string, string>;
              tolerations?: Array<{ key?: string; effect?: string }>;
              containers: Array<{
                name: string;
                image: string;
                resources?: { limits?: Record<string, unknown>; requests?: Record<string, unknown> };
              }>;
              initContainers?: Array<{ image: string }>;
            };
          };
        }
      ).template.spec;

    test('gpu: one nvidia.com/gpu per pod, GPU nodes only, CUDA provider, gpu image everywhere', () => {
      const objects = render('overlays/gpu');
      const spec = podSpecOf(objects);
      const server = spec.containers.find((c) => c.name === 'clipserve')!;
      expect(server.resources?.limits?.['nvidia.com/gpu']).toBe(1);
      expect(spec.tolerations).toEqual(
        expect.arrayContaining([expect.objectContaining({ key: 'nvidia.com/gpu', effect: 'NoSchedule' })]),
      );
      expect(Object.keys(spec.nodeSelector ?? {})).toContain('nvidia.com/gpu.present');
      expect(provider(objects)).toBe('cuda');
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) expect(c.image).toMatch(/-gpu$/);
    });

    test('gpu: `full` fine-tunes get the trainer image and pod options, and their Jobs land on the GPU nodes', () => {
      const objects = render('overlays/gpu');
      const data = (ofKind(objects, 'ConfigMap')[0] as unknown as { data: Record<string, string> }).data;
      const config = resolveServeConfig(configFromEnv(data));
      expect(config.finetuneImage).toMatch(/clipserve-trainer:[\w.-]+-gpu$/);
      const spec = podSpecOf(objects);
      const { job } = buildTrainingManifests({
        jobId: 'ftjob-1',
        namespace: 'clipserve',
        image: config.finetuneImage!,
        hp: { nodes: 1, gpus_per_node: 2 },
        trainerArgs: ['--epochs', '1'],
        storage: { pvcName: config.finetunePvc, mountPath: '/data' },
        pod: {
          gpuResource: config.finetuneGpuResource,
          nodeSelector: config.finetuneNodeSelector,
          tolerations: config.finetuneTolerations,
          shmSize: config.finetuneShmSize,
        },
      });
      expect(validateObjects([job as unknown as K8sObject])).toEqual([]);
      const pod = job.spec!.template.spec!;
      expect(pod.nodeSelector).toEqual(spec.nodeSelector);
      expect(pod.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
      expect(pod.containers[0].resources!.limits!['nvidia.com/gpu']).toBe('2');
      expect(pod.volumes!.find((v) => v.name === 'dshm')!.emptyDir!.sizeLimit).toBe(config.finetuneShmSize);
      // The claim the Jobs mount is the one the server's --data-dir lives on.
      const claims = ofKind(objects, 'PersistentVolumeClaim').map((c) => c.metadata?.name);
      expect(claims).toContain(config.finetunePvc);
    });

    test('cpu: no GPU request, CPU provider, cpu image everywhere', () => {
      const objects = render('overlays/cpu');
      const spec = podSpecOf(objects);
      for (const c of spec.containers) {
        expect(c.resources?.limits?.['nvidia.com/gpu']).toBeUndefined();
        expect(c.resources?.requests?.['nvidia.com/gpu']).toBeUndefined();
      }
      expect(spec.tolerations ?? []).toEqual([]);
      expect(provider(objects)).toBe('cpu');
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) expect(c.image).toMatch(/-cpu$/);
    });
  });

  describe('the PostgreSQL trial overlay', () => {
    type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
    const db = (): Any[] => render(TRIAL).filter(isDatabase) as Any[];
    const one = (kind: string): Any => {
      const found = db().filter((o) => o.kind === kind);
      expect(found).toHaveLength(1);
      return found[0];
    };
    const secretValue = (prefix: string, key: string): string => {
      const secret = db().find((o) => o.kind === 'Secret' && o.metadata.name.startsWith(prefix));
      return Buffer.from(secret.data[key], 'base64').toString('utf8');
    };

    test('one pinned PostgreSQL pod under the restricted Pod Security level', () => {
      const sts = one('StatefulSet');
      expect(sts.spec.replicas).toBe(1);
      const [container] = sts.spec.template.spec.containers;
      expect(container.image).toBe('postgres:16.6-bookworm');
      // The server-side security checks, on a Deployment-shaped wrapper (uid 999: the image's postgres user).
      const claims = sts.spec.volumeClaimTemplates.map((t: Any) => ({
        name: t.metadata.name,
        persistentVolumeClaim: { claimName: t.metadata.name },
      }));
      const template = {
        ...sts.spec.template,
        spec: { ...sts.spec.template.spec, volumes: [...sts.spec.template.spec.volumes, ...claims] },
      };
      const asDeployment = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: sts.metadata, spec: { template } };
      expect(checkPodSecurity([asDeployment], 999)).toEqual([]);
      expect(validateObjects(db())).toEqual([]);
    });

    test('the Service, the NetworkPolicy and the URL the server reads all point at that pod', () => {
      const sts = one('StatefulSet');
      const podLabels = sts.spec.template.metadata.labels;
      const svc = one('Service');
      expect(selectorMatches({ matchLabels: svc.spec.selector }, podLabels)).toBe(true);
      const port = sts.spec.template.spec.containers[0].ports.find((p: Any) => p.name === svc.spec.ports[0].targetPort);
      expect(port?.containerPort).toBe(5432);
      const np = one('NetworkPolicy');
      expect(selectorMatches(np.spec.podSelector, podLabels)).toBe(true);
      const serverLabels = (theDeployment(render(TRIAL)).spec as Any).template.metadata.labels;
      expect(
        np.spec.ingress.some((r: Any) => r.from.some((f: Any) => selectorMatches(f.podSelector, serverLabels))),
      ).toBe(true);
      const url = new URL(secretValue('clipserve-database-', 'url'));
      expect(url.protocol).toBe('postgres:');
      expect(url.hostname).toBe(svc.metadata.name);
      expect(Number(url.port)).toBe(svc.spec.ports[0].port);
      const env = Object.fromEntries(sts.spec.template.spec.containers[0].env.map((e: Any) => [e.name, e]));
      expect(url.username).toBe(env.POSTGRES_USER.value);
      expect(url.pathname).toBe(`/${env.POSTGRES_DB.value}`);
      expect(decodeURIComponent(url.password)).toBe(secretValue('clipserve-postgres-', 'password'));
      expect(env.POSTGRES_PASSWORD.valueFrom.secretKeyRef.name).toMatch(/^clipserve-postgres-\w+$/);
    });
  });

  describe('the checks catch broken manifests', () => {
    type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
    const deploymentOf = (objects: K8sObject[]): Any => theDeployment(objects);
    const server = (objects: K8sObject[]): Any => serverContainer(theDeployment(objects));
    const configOf = (objects: K8sObject[]): Any => ofKind(objects, 'ConfigMap')[0];

    test('schema: wrong types and unknown fields are reported', () => {
      const objects = clone('overlays/cpu');
      server(objects).ports[0].containerPort = 'fifty';
      expect(schemaErrors(theDeployment(objects)).join('\n')).toMatch(/containerPort must be integer/);
      server(objects).ports[0].containerPort = 50051;
      server(objects).readinesProbe = { grpc: { port: 50052 } };
      (ofKind(objects, 'ServiceMonitor')[0] as Any).spec.endpoints[0].intervall = '15s';
      const unknown = unknownFieldErrors(objects).flat().join('\n');
      expect(unknown).toMatch(/readinesProbe/);
      expect(unknown).toMatch(/intervall/);
    });

    test('flags or variables the server does not know, values it rejects, oversized thread pools', () => {
      const objects = clone('overlays/cpu');
      server(objects).args.push('--api-key-file=/etc/clipserve/api-keys/api-keys.json');
      configOf(objects).data.CLIPSERVE_PROVDER = 'cpu';
      configOf(objects).data.CLIPSERVE_INTRA_OP_THREADS = '16';
      const problems = checkServerConfig(objects).join('\n');
      expect(problems).toMatch(/clipserve serve has no option --api-key-file/);
      expect(problems).toMatch(/CLIPSERVE_PROVDER is read by neither/);
      expect(problems).toMatch(/--intra-op-threads 16 exceeds the CPU limit 4/);
      const rejected = clone('overlays/gpu');
      configOf(rejected).data.CLIPSERVE_PROVIDER = 'tpu';
      expect(checkServerConfig(rejected).join('\n')).toMatch(/rejects its configuration: .*provider/);
      const unset = clone('overlays/cpu');
      delete configOf(unset).data.CLIPSERVE_PREPROCESS_WORKERS;
      expect(checkServerConfig(unset).join('\n')).toMatch(/--preprocess-workers unset/);
    });

    test('probe on the API port, or not a gRPC probe', () => {
      const objects = clone('overlays/cpu');
      server(objects).readinessProbe.grpc.port = 50051;
      server(objects).livenessProbe = { httpGet: { port: 'metrics', path: '/healthz' } };
      const problems = checkProbes(objects).join('\n');
      expect(problems).toMatch(/readinessProbe probes port 50051, but the server's health port is 50052/);
      expect(problems).toMatch(/livenessProbe is not a native gRPC/);
    });

    test('ConfigMap port that no longer matches the container ports', () => {
      const objects = clone('overlays/gpu');
      configOf(objects).data.CLIPSERVE_HEALTH_PORT = '50099';
      expect(checkServerPorts(objects).join('\n')).toMatch(/--health-port is 50099 but port health is 50052/);
      expect(checkProbes(objects).join('\n')).toMatch(/health port is 50099/);
    });

    test('Service that selects nothing, or targets an undeclared port', () => {
      const objects = clone('overlays/cpu');
      const [a, b] = ofKind(objects, 'Service') as Any[];
      a.spec.selector['app.kubernetes.io/component'] = 'worker';
      b.spec.ports[0].targetPort = 'grcp';
      const problems = checkServices(objects).join('\n');
      expect(problems).toMatch(/does not select the pods/);
      expect(problems).toMatch(/targets grcp/);
      for (const s of ofKind(objects, 'Service') as Any[]) s.spec.clusterIP = 'None';
      expect(checkServices(objects).join('\n')).toMatch(/no ClusterIP Service/);
    });

    test('PDB or NetworkPolicy that misses the pods', () => {
      const objects = clone('overlays/cpu');
      (ofKind(objects, 'PodDisruptionBudget')[0] as Any).spec.selector.matchLabels = { app: 'clipserve' };
      (ofKind(objects, 'NetworkPolicy')[0] as Any).spec.ingress[0].ports[0].port = 8181;
      const problems = checkPdbAndNetworkPolicy(objects).join('\n');
      expect(problems).toMatch(/PodDisruptionBudget\/clipserve: selector does not select/);
      expect(problems).toMatch(/ingress port 8181/);
    });

    test('HPA aimed elsewhere, without the queue metric, or fighting spec.replicas', () => {
      const objects = clone('overlays/cpu');
      const hpa = ofKind(objects, 'HorizontalPodAutoscaler')[0] as Any;
      hpa.spec.scaleTargetRef.name = 'clip-serve';
      hpa.spec.metrics = hpa.spec.metrics.filter((m: Any) => m.type !== 'Pods');
      deploymentOf(objects).spec.replicas = 3;
      delete server(objects).resources.requests.cpu;
      const problems = checkHpa(objects).join('\n');
      expect(problems).toMatch(/scaleTargetRef/);
      expect(problems).toMatch(/no Pods metric clipserve_queue_depth/);
      expect(problems).toMatch(/spec.replicas/);
      expect(problems).toMatch(/no CPU request/);
    });

    test('ServiceMonitor on a missing port, or scraping through both Services', () => {
      const objects = clone('overlays/cpu');
      const sm = ofKind(objects, 'ServiceMonitor')[0] as Any;
      sm.spec.endpoints[0].port = 'http-metrics';
      expect(checkServiceMonitor(objects).join('\n')).toMatch(
        /endpoint port http-metrics is not a port of Service\/clipserve/,
      );
      sm.spec.endpoints[0].port = 'metrics';
      const headless = (ofKind(objects, 'Service') as Any[]).find((s) => s.spec.clusterIP === 'None');
      headless.metadata.labels['clipserve.io/scrape'] = 'true';
      expect(checkServiceMonitor(objects).join('\n')).toMatch(/selects 2 Services/);
    });

    test('drain window not longer than preStop + server grace', () => {
      const objects = clone('overlays/cpu');
      deploymentOf(objects).spec.template.spec.terminationGracePeriodSeconds = 30;
      expect(checkDrain(objects).join('\n')).toMatch(
        /terminationGracePeriodSeconds 30 must exceed preStop 5 s \+ server drain 25 s/,
      );
      const longer = clone('overlays/gpu');
      configOf(longer).data.CLIPSERVE_SHUTDOWN_GRACE_SECONDS = '60';
      expect(checkDrain(longer).join('\n')).toMatch(/server drain 60 s/);
      const noHook = clone('overlays/cpu');
      delete server(noHook).lifecycle;
      expect(checkDrain(noHook).join('\n')).toMatch(/no preStop sleep/);
    });

    test('RoleBinding for another account, or a Role without pod logs', () => {
      const objects = clone('overlays/cpu');
      (ofKind(objects, 'RoleBinding')[0] as Any).subjects[0].name = 'default';
      expect(checkRbac(objects).join('\n')).toMatch(/no RoleBinding binds ServiceAccount clipserve\/clipserve/);
      const noLogs = clone('overlays/cpu');
      const role = ofKind(noLogs, 'Role')[0] as Any;
      role.rules = role.rules.filter((r: Any) => !r.resources.includes('pods/log'));
      expect(checkRbac(noLogs).join('\n')).toMatch(/may not get pods\/log/);
      const noServices = clone('overlays/cpu');
      const r2 = ofKind(noServices, 'Role')[0] as Any;
      r2.rules = r2.rules.filter((r: Any) => !r.resources.includes('services'));
      expect(checkRbac(noServices).join('\n')).toMatch(/may not create services/);
    });

    test('weakened security context, service links, foreign uid', () => {
      const objects = clone('overlays/gpu');
      server(objects).securityContext.readOnlyRootFilesystem = false;
      server(objects).securityContext.capabilities.drop = [];
      delete deploymentOf(objects).spec.template.spec.enableServiceLinks;
      const problems = checkPodSecurity(objects, 1000).join('\n');
      expect(problems).toMatch(/readOnlyRootFilesystem is not true/);
      expect(problems).toMatch(/capabilities.drop does not include ALL/);
      expect(problems).toMatch(/enableServiceLinks/);
      expect(problems).toMatch(/runAsUser 10001 is not the image's USER 1000/);
    });

    test('volumes naming claims, ConfigMaps or Secrets that do not exist', () => {
      const objects = clone('overlays/cpu').filter(
        (o) => !(o.kind === 'PersistentVolumeClaim' && o.metadata?.name === 'clipserve-data'),
      );
      const noTemplates = checkVolumeSources(objects, []).join('\n');
      expect(noTemplates).toMatch(/clipserve-data is not in the manifests/);
      expect(noTemplates).toMatch(/Secret clipserve-tls has neither a manifest nor a template/);
      expect(noTemplates).toMatch(
        /env CLIPSERVE_DATABASE_URL reads Secret clipserve-database, which has neither a manifest nor a template/,
      );
      const wrongKey = secretTemplates.map((t) =>
        t.metadata?.name === 'clipserve-database' ? { ...t, stringData: { uri: 'postgres://x' } } : t,
      );
      expect(checkVolumeSources(clone('overlays/cpu'), wrongKey).join('\n')).toMatch(
        /reads key url of Secret clipserve-database, which has uri/,
      );
      const noConfig = clone('overlays/cpu').filter((o) => o.kind !== 'ConfigMap');
      expect(checkVolumeSources(noConfig, secretTemplates).join('\n')).toMatch(
        /envFrom ConfigMap clipserve-config-\w+ is not in the manifests/,
      );
    });
  });
}

describe('cross-reference primitives', () => {
  test('label selectors follow Kubernetes semantics', () => {
    const labels = { a: '1', b: '2' };
    expect(selectorMatches({ matchLabels: { a: '1' } }, labels)).toBe(true);
    expect(selectorMatches({ matchLabels: { a: '2' } }, labels)).toBe(false);
    expect(selectorMatches({ matchExpressions: [{ key: 'b', operator: 'In', values: ['2', '3'] }] }, labels)).toBe(
      true,
    );
    expect(selectorMatches({ matchExpressions: [{ key: 'c', operator: 'DoesNotExist' }] }, labels)).toBe(true);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, labels)).toBe(false);
    expect(selectorMatches({}, labels)).toBe(false);
  });

  test('$(VAR) expansion matches the kubelet: known vars expand, $$ escapes, unknown stay', () => {
    expect(expandKubeletVars('--port=$(P) $$(P) $(Q)', { P: '1' })).toBe('--port=1 $(P) $(Q)');
  });
});
