/**
 * Cross-reference checks over one rendered set of clipserve manifests: the things a schema cannot
 * see because they span objects (a probe port that no container exposes, a Service that selects no
 * pod, a drain window shorter than the server's own drain...). Each check returns a list of
 * problems, [] when the manifests are consistent, so tests can show every problem at once and can
 * feed deliberately broken manifests to prove a check fires.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { K8sObject } from './k8s-schema';
import { describeObject } from './k8s-schema';
import { configFromEnv, flagName, resolveServeConfig, SERVE_OPTIONS, ServeConfig } from '../../server/src/serve/config';

/* Minimal structural types for the fields the checks read. Everything is optional: the objects
 * come from YAML, and a missing field must become a reported problem, never a crash. */
interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}
interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}
interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: { port: number | string; path?: string };
  tcpSocket?: { port: number | string };
  exec?: { command?: string[] };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}
interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
  env?: EnvVar[];
  envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
  ports?: ContainerPort[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] }; sleep?: { seconds: number } } };
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsNonRoot?: boolean;
    runAsUser?: number;
    privileged?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
    seccompProfile?: { type?: string };
  };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string };
  secret?: { secretName?: string; optional?: boolean };
  configMap?: { name?: string; optional?: boolean };
  emptyDir?: unknown;
}
interface PodSpec {
  serviceAccountName?: string;
  enableServiceLinks?: boolean;
  terminationGracePeriodSeconds?: number;
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    runAsGroup?: number;
    seccompProfile?: { type?: string };
  };
  initContainers?: Container[];
  containers?: Container[];
  volumes?: Volume[];
  nodeSelector?: Record<string, string>;
  tolerations?: Array<{ key?: string; operator?: string; effect?: string }>;
}
interface Deployment extends K8sObject {
  spec?: {
    replicas?: number;
    selector?: LabelSelector;
    template?: { metadata?: { labels?: Record<string, string> }; spec?: PodSpec };
  };
}
interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
}
interface Service extends K8sObject {
  spec?: { clusterIP?: string; type?: string; selector?: Record<string, string>; ports?: ServicePort[] };
}

/** The server's default drain when neither a flag nor CLIPSERVE_SHUTDOWN_GRACE_SECONDS says otherwise. */
export const SERVER_DEFAULT_SHUTDOWN_GRACE_SECONDS = Number(
  SERVE_OPTIONS.find((o) => o.key === 'shutdownGraceSeconds')?.defaultValue,
);

/** CLIPSERVE_* variables the image's prepare-model script reads (not server options). */
export const PREPARE_MODEL_VARS: readonly string[] = [
  ...new Set(
    [
      ...fs
        .readFileSync(path.resolve(__dirname, '..', '..', 'deploy', 'docker', 'prepare-model.sh'), 'utf8')
        .matchAll(/\$\{?(CLIPSERVE_[A-Z0-9_]+)/g),
    ].map((m) => m[1]),
  ),
];

export function ofKind<T extends K8sObject = K8sObject>(objects: K8sObject[], kind: string): T[] {
  return objects.filter((o) => o.kind === kind) as T[];
}

/** True when `selector` selects an object carrying `labels` (Kubernetes label-selector semantics). */
export function selectorMatches(selector: LabelSelector | undefined, labels: Record<string, string> = {}): boolean {
  if (!selector) return false;
  const exprs = selector.matchExpressions ?? [];
  const pairs = Object.entries(selector.matchLabels ?? {});
  if (pairs.length === 0 && exprs.length === 0) return false; // empty selectors match everything: never what we mean
  if (!pairs.every(([k, v]) => labels[k] === v)) return false;
  return exprs.every(({ key, operator, values = [] }) => {
    switch (operator) {
      case 'In':
        return key in labels && values.includes(labels[key]);
      case 'NotIn':
        return !(key in labels) || !values.includes(labels[key]);
      case 'Exists':
        return key in labels;
      case 'DoesNotExist':
        return !(key in labels);
      default:
        return false;
    }
  });
}

/** The single Deployment the checks are about; throws when the set has none or several. */
export function theDeployment(objects: K8sObject[]): Deployment {
  const deployments = ofKind<Deployment>(objects, 'Deployment');
  if (deployments.length !== 1) throw new Error(`expected exactly one Deployment, found ${deployments.length}`);
  return deployments[0];
}

function podLabels(d: Deployment): Record<string, string> {
  return d.spec?.template?.metadata?.labels ?? {};
}
function podSpec(d: Deployment): PodSpec {
  return d.spec?.template?.spec ?? {};
}
/** The serving container: the one that declares a gRPC port. */
export function serverContainer(d: Deployment): Container | undefined {
  return (podSpec(d).containers ?? []).find((c) => (c.ports ?? []).some((p) => p.name === 'grpc'));
}
function allContainers(d: Deployment): Container[] {
  return [...(podSpec(d).initContainers ?? []), ...(podSpec(d).containers ?? [])];
}

/** A port reference (number or name) resolved against a container's declared ports. */
function resolvePort(container: Container, ref: number | string | undefined): ContainerPort | undefined {
  if (ref === undefined) return undefined;
  return (container.ports ?? []).find((p) => (typeof ref === 'number' ? p.containerPort === ref : p.name === ref));
}

/**
 * The environment a container sees: ConfigMaps from envFrom first, then `env` (which wins, as in
 * the kubelet). Values that come from elsewhere (valueFrom) are unknown and left out.
 */
export function containerEnv(
  objects: K8sObject[],
  container: Container,
): { env: Record<string, string>; problems: string[] } {
  const env: Record<string, string> = {};
  const problems: string[] = [];
  for (const from of container.envFrom ?? []) {
    if (from.configMapRef) {
      const cm = ofKind(objects, 'ConfigMap').find((c) => c.metadata?.name === from.configMapRef!.name);
      if (!cm)
        problems.push(
          `container ${container.name}: envFrom ConfigMap ${from.configMapRef.name} is not in the manifests`,
        );
      else Object.assign(env, (cm as K8sObject & { data?: Record<string, string> }).data ?? {});
    }
  }
  for (const e of container.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return { env, problems };
}

/** `$(VAR)` expansion as the kubelet does it for args ($$ escapes, unknown references stay as written). */
export function expandKubeletVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && name in env ? env[name] : m;
  });
}

/**
 * The effective value of a server option: the last `--flag=value` / `--flag value` in args (after
 * $(VAR) expansion), else the environment variable, else undefined.
 */
export function effectiveOption(
  objects: K8sObject[],
  container: Container,
  flag: string,
  envName: string,
): string | undefined {
  const { env } = containerEnv(objects, container);
  const args = (container.args ?? []).map((a) => expandKubeletVars(a, env));
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag && i + 1 < args.length) value = args[i + 1];
    else if (args[i].startsWith(flag + '=')) value = args[i].slice(flag.length + 1);
  }
  return value ?? env[envName];
}

/** Seconds a preStop hook holds the pod before SIGTERM: `sleep N` exec, or the sleep action. */
export function preStopSeconds(container: Container): number | undefined {
  const preStop = container.lifecycle?.preStop;
  if (!preStop) return undefined;
  if (preStop.sleep) return preStop.sleep.seconds;
  const cmd = preStop.exec?.command ?? [];
  const sleepAt = cmd.findIndex((c) => c === 'sleep' || c.endsWith('/sleep'));
  if (sleepAt >= 0 && /^\d+$/.test(cmd[sleepAt + 1] ?? '')) return Number(cmd[sleepAt + 1]);
  const shell = cmd.join(' ').match(/\bsleep\s+(\d+)\b/);
  return shell ? Number(shell[1]) : undefined;
}

// --- the checks ---------------------------------------------------------------------------------

/** Probes: all three present, native gRPC, on a declared container port that is the health port. */
export function checkProbes(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  if (!c) return [`${describeObject(d)}: no container declares a port named grpc`];
  const problems: string[] = [];
  const healthPort = effectiveOption(objects, c, '--health-port', 'CLIPSERVE_HEALTH_PORT');
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe'] as const) {
    const probe = c[kind];
    if (!probe) {
      problems.push(`container ${c.name}: no ${kind}`);
      continue;
    }
    if (!probe.grpc) {
      problems.push(`container ${c.name}: ${kind} is not a native gRPC (grpc.health.v1) probe`);
      continue;
    }
    const port = resolvePort(c, probe.grpc.port);
    if (!port) problems.push(`container ${c.name}: ${kind} port ${probe.grpc.port} is not a container port`);
    if (healthPort === undefined)
      problems.push(
        `container ${c.name}: no --health-port / CLIPSERVE_HEALTH_PORT, but ${kind} needs the plaintext health port`,
      );
    else if (String(probe.grpc.port) !== healthPort)
      problems.push(
        `container ${c.name}: ${kind} probes port ${probe.grpc.port}, but the server's health port is ${healthPort}`,
      );
  }
  return problems;
}

/** Server flags/env and container ports agree: --port ↔ grpc, --health-port ↔ health, --metrics-port ↔ metrics, --http-port ↔ http. */
export function checkServerPorts(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  if (!c) return [`${describeObject(d)}: no container declares a port named grpc`];
  const problems: string[] = [];
  const table: Array<[string, string, string]> = [
    ['grpc', '--port', 'CLIPSERVE_PORT'],
    ['health', '--health-port', 'CLIPSERVE_HEALTH_PORT'],
    ['metrics', '--metrics-port', 'CLIPSERVE_METRICS_PORT'],
    ['http', '--http-port', 'CLIPSERVE_HTTP_PORT'],
  ];
  for (const [portName, flag, envName] of table) {
    const declared = resolvePort(c, portName);
    const configured = effectiveOption(objects, c, flag, envName);
    if (!declared) problems.push(`container ${c.name}: no container port named ${portName}`);
    else if (configured === undefined)
      problems.push(
        `container ${c.name}: ${flag} / ${envName} not set, port ${portName} (${declared.containerPort}) is a guess`,
      );
    else if (configured !== String(declared.containerPort))
      problems.push(`container ${c.name}: ${flag} is ${configured} but port ${portName} is ${declared.containerPort}`);
  }
  problems.push(...containerEnv(objects, c).problems);
  return problems;
}

/** Every Service selects the Deployment's pods and targets ports its server container declares. */
export function checkServices(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  const services = ofKind<Service>(objects, 'Service');
  const problems: string[] = [];
  if (!services.some((s) => s.spec?.clusterIP === 'None'))
    problems.push('no headless Service (clusterIP: None) for client-side round_robin');
  if (!services.some((s) => s.spec?.clusterIP !== 'None' && (s.spec?.type ?? 'ClusterIP') === 'ClusterIP'))
    problems.push('no ClusterIP Service');
  for (const s of services) {
    if (!selectorMatches({ matchLabels: s.spec?.selector }, podLabels(d))) {
      problems.push(
        `${describeObject(s)}: selector ${JSON.stringify(s.spec?.selector ?? {})} does not select the pods of ${describeObject(d)} (${JSON.stringify(podLabels(d))})`,
      );
    }
    for (const p of s.spec?.ports ?? []) {
      if (!c || !resolvePort(c, p.targetPort ?? p.port))
        problems.push(
          `${describeObject(s)}: port ${p.name ?? p.port} targets ${p.targetPort ?? p.port}, which the server container does not declare`,
        );
    }
  }
  return problems;
}

/** The PDB and the NetworkPolicy select the Deployment's pods; policy ports exist on the container. */
export function checkPdbAndNetworkPolicy(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  const problems: string[] = [];
  const pdbs = ofKind<K8sObject & { spec?: { selector?: LabelSelector } }>(objects, 'PodDisruptionBudget');
  if (pdbs.length === 0) problems.push('no PodDisruptionBudget');
  for (const pdb of pdbs) {
    if (!selectorMatches(pdb.spec?.selector, podLabels(d)))
      problems.push(`${describeObject(pdb)}: selector does not select the pods of ${describeObject(d)}`);
  }
  type Np = K8sObject & {
    spec?: { podSelector?: LabelSelector; ingress?: Array<{ ports?: Array<{ port?: number | string }> }> };
  };
  const policies = ofKind<Np>(objects, 'NetworkPolicy');
  if (policies.length === 0) problems.push('no NetworkPolicy');
  for (const np of policies) {
    if (!selectorMatches(np.spec?.podSelector, podLabels(d)))
      problems.push(`${describeObject(np)}: podSelector does not select the pods of ${describeObject(d)}`);
    for (const rule of np.spec?.ingress ?? []) {
      for (const p of rule.ports ?? []) {
        if (!c || !resolvePort(c, p.port))
          problems.push(`${describeObject(np)}: ingress port ${p.port} is not a port of the server container`);
      }
    }
  }
  return problems;
}

/** The HPA scales the Deployment on the queue-depth Pods metric with CPU as fallback, and can. */
export function checkHpa(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  type Hpa = K8sObject & {
    spec?: {
      scaleTargetRef?: { apiVersion?: string; kind?: string; name?: string };
      minReplicas?: number;
      maxReplicas?: number;
      metrics?: Array<{
        type: string;
        pods?: { metric?: { name?: string } };
        resource?: { name?: string; target?: { type?: string } };
      }>;
    };
  };
  const hpas = ofKind<Hpa>(objects, 'HorizontalPodAutoscaler');
  if (hpas.length !== 1) return [`expected one HorizontalPodAutoscaler, found ${hpas.length}`];
  const hpa = hpas[0];
  const problems: string[] = [];
  const ref = hpa.spec?.scaleTargetRef;
  if (ref?.kind !== 'Deployment' || ref.apiVersion !== 'apps/v1' || ref.name !== d.metadata?.name) {
    problems.push(
      `${describeObject(hpa)}: scaleTargetRef ${JSON.stringify(ref)} is not apps/v1 Deployment ${d.metadata?.name}`,
    );
  }
  if (hpa.apiVersion !== 'autoscaling/v2')
    problems.push(`${describeObject(hpa)}: apiVersion ${hpa.apiVersion}, want autoscaling/v2`);
  const metrics = hpa.spec?.metrics ?? [];
  if (!metrics.some((m) => m.type === 'Pods' && m.pods?.metric?.name === 'clipserve_queue_depth'))
    problems.push(`${describeObject(hpa)}: no Pods metric clipserve_queue_depth`);
  const cpu = metrics.find((m) => m.type === 'Resource' && m.resource?.name === 'cpu');
  if (!cpu) problems.push(`${describeObject(hpa)}: no CPU Resource metric as fallback`);
  if ((hpa.spec?.minReplicas ?? 1) < 2)
    problems.push(`${describeObject(hpa)}: minReplicas < 2 leaves no replica during a disruption`);
  // Utilization targets are relative to requests: without a CPU request on every container the
  // HPA cannot compute the metric at all.
  if (cpu?.resource?.target?.type === 'Utilization') {
    for (const container of podSpec(d).containers ?? []) {
      if (container.resources?.requests?.cpu === undefined)
        problems.push(`container ${container.name}: no CPU request, so the HPA's CPU utilization is undefined`);
    }
  }
  if (d.spec?.replicas !== undefined)
    problems.push(`${describeObject(d)}: sets spec.replicas, which fights the HPA on every apply`);
  return problems;
}

/** The ServiceMonitor selects a Service in its namespace whose named port serves metrics. */
export function checkServiceMonitor(objects: K8sObject[]): string[] {
  type Sm = K8sObject & {
    spec?: {
      selector?: LabelSelector;
      namespaceSelector?: { matchNames?: string[]; any?: boolean };
      endpoints?: Array<{ port?: string; path?: string }>;
    };
  };
  const monitors = ofKind<Sm>(objects, 'ServiceMonitor');
  if (monitors.length === 0) return ['no ServiceMonitor'];
  const d = theDeployment(objects);
  const c = serverContainer(d);
  const problems: string[] = [];
  for (const sm of monitors) {
    const ns = sm.spec?.namespaceSelector;
    const namespaces = ns?.any ? undefined : (ns?.matchNames ?? [sm.metadata?.namespace ?? '']);
    const selected = ofKind<Service>(objects, 'Service').filter(
      (s) =>
        selectorMatches(sm.spec?.selector, s.metadata?.labels) &&
        (!namespaces || namespaces.includes(s.metadata?.namespace ?? '')),
    );
    if (selected.length === 0) {
      problems.push(`${describeObject(sm)}: selects no Service`);
      continue;
    }
    if (selected.length > 1)
      problems.push(
        `${describeObject(sm)}: selects ${selected.length} Services (${selected.map(describeObject).join(', ')}): every pod would be scraped more than once`,
      );
    for (const ep of sm.spec?.endpoints ?? []) {
      for (const s of selected) {
        const sp = (s.spec?.ports ?? []).find((p) => p.name === ep.port);
        if (!sp) {
          problems.push(`${describeObject(sm)}: endpoint port ${ep.port} is not a port of ${describeObject(s)}`);
          continue;
        }
        const target = c && resolvePort(c, sp.targetPort ?? sp.port);
        if (!target || target.name !== 'metrics')
          problems.push(
            `${describeObject(sm)}: port ${ep.port} of ${describeObject(s)} does not reach the container's metrics port`,
          );
      }
    }
  }
  return problems;
}

/** The kubelet waits longer than preStop + the server's own drain before SIGKILL. */
export function checkDrain(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  if (!c) return [`${describeObject(d)}: no server container`];
  const problems: string[] = [];
  const graceText = effectiveOption(objects, c, '--shutdown-grace-seconds', 'CLIPSERVE_SHUTDOWN_GRACE_SECONDS');
  const grace = graceText === undefined ? SERVER_DEFAULT_SHUTDOWN_GRACE_SECONDS : Number(graceText);
  if (!Number.isFinite(grace) || grace < 0)
    problems.push(`container ${c.name}: shutdown grace "${graceText}" is not a number of seconds`);
  const preStop = preStopSeconds(c);
  if (preStop === undefined)
    problems.push(`container ${c.name}: no preStop sleep; the pod would stop accepting before endpoints drop it`);
  const tgps = podSpec(d).terminationGracePeriodSeconds ?? 30;
  const needed = (preStop ?? 0) + grace;
  if (!(tgps > needed))
    problems.push(
      `${describeObject(d)}: terminationGracePeriodSeconds ${tgps} must exceed preStop ${preStop ?? 0} s + server drain ${grace} s = ${needed} s`,
    );
  return problems;
}

/** The RoleBinding binds the Deployment's ServiceAccount to a Role that can run fine-tune Jobs. */
export function checkRbac(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const problems: string[] = [];
  const sa = podSpec(d).serviceAccountName ?? 'default';
  const ns = d.metadata?.namespace;
  if (sa === 'default') problems.push(`${describeObject(d)}: runs as the default ServiceAccount`);
  if (!ofKind(objects, 'ServiceAccount').some((o) => o.metadata?.name === sa && o.metadata?.namespace === ns))
    problems.push(`ServiceAccount ${ns}/${sa} is not in the manifests`);
  type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[] };
  type Rb = K8sObject & {
    roleRef?: { kind?: string; name?: string };
    subjects?: Array<{ kind: string; name: string; namespace?: string }>;
  };
  const bindings = ofKind<Rb>(objects, 'RoleBinding').filter((rb) =>
    (rb.subjects ?? []).some(
      (s) => s.kind === 'ServiceAccount' && s.name === sa && (s.namespace ?? rb.metadata?.namespace) === ns,
    ),
  );
  if (bindings.length === 0) {
    problems.push(`no RoleBinding binds ServiceAccount ${ns}/${sa}`);
    return problems;
  }
  const rules: Rule[] = [];
  for (const rb of bindings) {
    const role = ofKind<K8sObject & { rules?: Rule[] }>(objects, rb.roleRef?.kind ?? 'Role').find(
      (r) => r.metadata?.name === rb.roleRef?.name,
    );
    if (!role)
      problems.push(`${describeObject(rb)}: roleRef ${rb.roleRef?.kind}/${rb.roleRef?.name} is not in the manifests`);
    else rules.push(...(role.rules ?? []));
  }
  const allows = (group: string, resource: string, verb: string): boolean =>
    rules.some(
      (r) =>
        (r.apiGroups ?? []).some((g) => g === group || g === '*') &&
        (r.resources ?? []).some((x) => x === resource || x === '*') &&
        (r.verbs ?? []).some((v) => v === verb || v === '*'),
    );
  const needed: Array<[string, string, string]> = [
    ['batch', 'jobs', 'create'],
    ['batch', 'jobs', 'get'],
    ['batch', 'jobs', 'watch'],
    ['', 'pods', 'get'],
    ['', 'pods', 'list'],
    ['', 'pods', 'watch'],
    ['', 'pods/log', 'get'],
    // Multi-node `full` jobs: the headless rendezvous Service (server/src/finetune/full/job-runner.ts).
    ['', 'services', 'create'],
  ];
  for (const [g, r, v] of needed)
    if (!allows(g, r, v)) problems.push(`ServiceAccount ${ns}/${sa} may not ${v} ${g ? g + '/' : ''}${r}`);
  return problems;
}

/** Restricted-PSS pod hardening, resources on every container, and writable scratch mounts. */
export function checkPodSecurity(objects: K8sObject[], expectedUid?: number): string[] {
  const d = theDeployment(objects);
  const spec = podSpec(d);
  const problems: string[] = [];
  const psc = spec.securityContext ?? {};
  if (psc.runAsNonRoot !== true) problems.push('pod securityContext.runAsNonRoot is not true');
  if (psc.seccompProfile?.type !== 'RuntimeDefault') problems.push('pod seccompProfile is not RuntimeDefault');
  if (expectedUid !== undefined && psc.runAsUser !== expectedUid)
    problems.push(`pod runAsUser ${psc.runAsUser} is not the image's USER ${expectedUid}`);
  if (spec.enableServiceLinks !== false)
    problems.push(
      "enableServiceLinks is not false: Service env vars (CLIPSERVE_PORT=tcp://...) would collide with the server's CLIPSERVE_* settings",
    );
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  for (const c of allContainers(d)) {
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false)
      problems.push(`container ${c.name}: allowPrivilegeEscalation is not false`);
    if (sc.readOnlyRootFilesystem !== true) problems.push(`container ${c.name}: readOnlyRootFilesystem is not true`);
    if (sc.privileged === true) problems.push(`container ${c.name}: privileged`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL'))
      problems.push(`container ${c.name}: capabilities.drop does not include ALL`);
    if ((sc.capabilities?.add ?? []).length > 0)
      problems.push(`container ${c.name}: adds capabilities ${sc.capabilities?.add?.join(',')}`);
    for (const r of ['cpu', 'memory']) {
      if (c.resources?.requests?.[r] === undefined) problems.push(`container ${c.name}: no ${r} request`);
    }
    if (c.resources?.limits?.memory === undefined) problems.push(`container ${c.name}: no memory limit`);
    for (const m of c.volumeMounts ?? [])
      if (!volumes.has(m.name)) problems.push(`container ${c.name}: mounts unknown volume ${m.name}`);
    const writable = (c.volumeMounts ?? []).filter((m) => !m.readOnly).map((m) => m.mountPath);
    if (!writable.includes('/tmp'))
      problems.push(`container ${c.name}: read-only root filesystem but no writable /tmp mount`);
    const cacheDir = containerEnv(objects, c).env.CLIPSERVE_CACHE_DIR;
    if (cacheDir && !writable.some((p) => cacheDir === p || cacheDir.startsWith(p + '/')))
      problems.push(`container ${c.name}: CLIPSERVE_CACHE_DIR ${cacheDir} is not on a writable mount`);
  }
  return problems;
}

/** Claims and ConfigMaps named by the pod exist in the manifests; Secrets exist there or as templates. */
export function checkVolumeSources(objects: K8sObject[], secretTemplates: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const problems: string[] = [];
  const names = (kind: string, from: K8sObject[] = objects): Set<string | undefined> =>
    new Set(ofKind(from, kind).map((o) => o.metadata?.name));
  const pvcs = names('PersistentVolumeClaim');
  const configMaps = names('ConfigMap');
  const secrets = new Set([...names('Secret'), ...names('Secret', secretTemplates)]);
  for (const v of podSpec(d).volumes ?? []) {
    if (v.persistentVolumeClaim && !pvcs.has(v.persistentVolumeClaim.claimName))
      problems.push(
        `volume ${v.name}: PersistentVolumeClaim ${v.persistentVolumeClaim.claimName} is not in the manifests`,
      );
    if (v.configMap && !v.configMap.optional && !configMaps.has(v.configMap.name))
      problems.push(`volume ${v.name}: ConfigMap ${v.configMap.name} is not in the manifests`);
    if (v.secret && !v.secret.optional && !secrets.has(v.secret.secretName))
      problems.push(`volume ${v.name}: Secret ${v.secret.secretName} has neither a manifest nor a template`);
  }
  for (const c of allContainers(d)) {
    problems.push(...containerEnv(objects, c).problems);
    problems.push(...secretKeyRefProblems(objects, secretTemplates, c));
  }
  return problems;
}

/** The keys a Secret holds (a rendered manifest's data, or a template's stringData/data). */
function secretKeys(secret: K8sObject): string[] {
  const s = secret as K8sObject & { stringData?: object; data?: object };
  return Object.keys({ ...(s.stringData ?? {}), ...(s.data ?? {}) });
}

/** Environment variables taken from Secrets: the Secret exists (manifest or template) and has the key. */
export function secretKeyRefProblems(objects: K8sObject[], secretTemplates: K8sObject[], c: Container): string[] {
  const problems: string[] = [];
  const secrets = [...ofKind(objects, 'Secret'), ...ofKind(secretTemplates, 'Secret')];
  for (const e of c.env ?? []) {
    const ref = (e.valueFrom as { secretKeyRef?: { name: string; key: string; optional?: boolean } } | undefined)
      ?.secretKeyRef;
    if (!ref || ref.optional) continue;
    const secret = secrets.find((x) => x.metadata?.name === ref.name);
    if (!secret)
      problems.push(
        `container ${c.name}: env ${e.name} reads Secret ${ref.name}, which has neither a manifest nor a template`,
      );
    else if (!secretKeys(secret).includes(ref.key))
      problems.push(
        `container ${c.name}: env ${e.name} reads key ${ref.key} of Secret ${ref.name}, which has ${secretKeys(secret).join(', ')}`,
      );
  }
  return problems;
}

/** Every object of a namespaced kind lives in the Deployment's namespace. */
export function checkNamespaces(objects: K8sObject[]): string[] {
  const ns = theDeployment(objects).metadata?.namespace;
  if (!ns) return ['the Deployment has no namespace'];
  const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'PersistentVolume', 'StorageClass']);
  return objects
    .filter((o) => !clusterScoped.has(o.kind) && o.metadata?.namespace !== ns)
    .map((o) => `${describeObject(o)}: namespace ${o.metadata?.namespace ?? '<none>'}, expected ${ns}`);
}

/** CPU cores a quantity such as "4", "500m" or 2 stands for. */
export function cpuCores(q: string | number | undefined): number | undefined {
  if (q === undefined) return undefined;
  const text = String(q);
  return text.endsWith('m') ? Number(text.slice(0, -1)) / 1000 : Number(text);
}

/**
 * The server container's configuration, parsed by the server's own option table exactly as
 * `clipserve serve` would (flags > CLIPSERVE_* environment > defaults): unknown flags, CLIPSERVE_*
 * variables that neither the server nor the image's scripts read, values the server rejects, and
 * thread pools larger than the CPU limit (they default to the node's core count) are problems.
 */
export function checkServerConfig(objects: K8sObject[]): string[] {
  const d = theDeployment(objects);
  const c = serverContainer(d);
  if (!c) return [`${describeObject(d)}: no server container`];
  const problems: string[] = [];
  const { env, problems: envProblems } = containerEnv(objects, c);
  problems.push(...envProblems);
  const knownEnv = new Set([...SERVE_OPTIONS.map((o) => o.env), ...PREPARE_MODEL_VARS]);
  for (const name of Object.keys(env)) {
    if (name.startsWith('CLIPSERVE_') && !knownEnv.has(name))
      problems.push(`container ${c.name}: ${name} is read by neither clipserve serve nor the image's scripts`);
  }
  const partial: Partial<Record<keyof ServeConfig, unknown>> = { ...configFromEnv(env) };
  const args = (c.args ?? []).map((a) => expandKubeletVars(a, env));
  for (let i = 0; i < args.length; i++) {
    const m = args[i].match(/^--([a-z0-9-]+)(?:=(.*))?$/);
    const spec = m && SERVE_OPTIONS.find((o) => flagName(o) === m[1]);
    if (!m || !spec) {
      problems.push(`container ${c.name}: clipserve serve has no option ${args[i]}`);
      continue;
    }
    const value = m[2] ?? args[++i];
    if (value === undefined) {
      problems.push(`container ${c.name}: ${args[i - 1]} has no value`);
      continue;
    }
    if (/\$\([A-Za-z_]/.test(value)) problems.push(`container ${c.name}: ${args[i]} references an undefined variable`);
    partial[spec.key] = value;
  }
  let config: ServeConfig;
  try {
    config = resolveServeConfig(partial);
  } catch (err) {
    problems.push(`container ${c.name}: clipserve serve rejects its configuration: ${(err as Error).message}`);
    return problems;
  }
  const limit = cpuCores(c.resources?.limits?.cpu);
  if (limit !== undefined) {
    for (const key of ['intraOpThreads', 'preprocessWorkers'] as const) {
      const n = config[key] as number | undefined;
      const flag = `--${flagName(SERVE_OPTIONS.find((o) => o.key === key)!)}`;
      if (n === undefined)
        problems.push(
          `container ${c.name}: ${flag} unset, so it follows the node's core count, not the ${limit}-CPU limit`,
        );
      else if (n > limit) problems.push(`container ${c.name}: ${flag} ${n} exceeds the CPU limit ${limit}`);
    }
  }
  return problems;
}

/** Every cross-reference check, for one rendered overlay. */
export function crossReferenceProblems(
  objects: K8sObject[],
  secretTemplates: K8sObject[],
  expectedUid?: number,
): string[] {
  return [
    ...checkServerConfig(objects),
    ...checkProbes(objects),
    ...checkServerPorts(objects),
    ...checkServices(objects),
    ...checkPdbAndNetworkPolicy(objects),
    ...checkHpa(objects),
    ...checkServiceMonitor(objects),
    ...checkDrain(objects),
    ...checkRbac(objects),
    ...checkPodSecurity(objects, expectedUid),
    ...checkVolumeSources(objects, secretTemplates),
    ...checkNamespaces(objects),
  ];
}
