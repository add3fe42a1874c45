/**
 * The Kubernetes objects of one `full` fine-tune: a batch/v1 Job running the trainer and, for more
 * than one node, an Indexed Job plus a headless Service whose DNS gives node 0 a stable name for
 * torchrun's rendezvous. Pure functions: the runner (job-runner.ts) submits what these return.
 *
 * The training pods mount the same ReadWriteMany volume as the server at the same path, so the
 * dataset, the base weights and the checkpoints have one path on both sides.
 */
import * as crypto from 'node:crypto';
import type { V1Job, V1OwnerReference, V1Service, V1Toleration } from '@kubernetes/client-node';
import type { FullHyperparameters } from './hyperparameters';
import { RENDEZVOUS_PORT, trainingCommand } from './trainer-args';

export const CONTAINER_NAME = 'trainer';
/** Label carrying the fine-tune job (sanitised id); selects the pods for the headless Service. */
export const JOB_LABEL = 'clipserve.io/finetune-job';
/** Annotation with the exact clipserve job id (label values are restricted). */
export const JOB_ID_ANNOTATION = 'clipserve.io/finetune-job-id';
/** Label the Job controller puts on every pod of a Job (all Kubernetes versions). */
export const POD_JOB_NAME_LABEL = 'job-name';

export interface TrainingStorage {
  /** ReadWriteMany claim shared with the server (its --data-dir lives on it). */
  pvcName: string;
  /** Where the server sees it; mounted at the same path in the training pods. */
  mountPath: string;
}

export interface TrainingPodOptions {
  /** CPU / memory per pod; GPUs come from the hyperparameters. */
  requests?: { cpu?: string; memory?: string };
  limits?: { cpu?: string; memory?: string };
  /** Size of the in-memory /dev/shm (PyTorch DataLoader workers pass batches through it). */
  shmSize?: string;
  /** The extended resource that counts GPUs; default nvidia.com/gpu. */
  gpuResource?: string;
  nodeSelector?: Record<string, string>;
  tolerations?: V1Toleration[];
  /** Must be able to read and write the shared volume; the server pods run as 10001:10001. */
  runAsUser?: number;
  runAsGroup?: number;
  imagePullSecrets?: string[];
  serviceAccountName?: string;
  /** Seconds a finished Job (and its pods' logs) is kept; default one day. */
  ttlSecondsAfterFinished?: number;
  /** Hard limit on the Job's running time. */
  activeDeadlineSeconds?: number;
  /** Extra labels on the Job and its pods. */
  labels?: Record<string, string>;
}

export interface TrainingJobSpec {
  jobId: string;
  namespace: string;
  image: string;
  hp: Pick<FullHyperparameters, 'gpus_per_node' | 'nodes'>;
  /** open_clip_train.main arguments (openClipTrainArgs). */
  trainerArgs: string[];
  storage: TrainingStorage;
  pod?: TrainingPodOptions;
}

export interface TrainingManifests {
  job: V1Job;
  /** Present when nodes > 1. */
  service?: V1Service;
}

export const DEFAULT_GPU_RESOURCE = 'nvidia.com/gpu';

/** GPU nodes are commonly tainted with the GPU resource's name so that only GPU work lands there. */
export function defaultGpuTolerations(gpuResource = DEFAULT_GPU_RESOURCE): V1Toleration[] {
  return [{ key: gpuResource, operator: 'Exists', effect: 'NoSchedule' }];
}
export const DEFAULT_GPU_TOLERATIONS: V1Toleration[] = defaultGpuTolerations();

/**
 * A DNS-1123 name for the Job derived from the clipserve job id. At most 52 characters: the
 * Indexed Job's pod hostnames (`<name>-<index>`) and the Job controller's generated pod names must
 * still fit in 63. Over-long or altered ids keep a hash suffix so two ids never share a name.
 */
export function trainingJobName(jobId: string): string {
  const slug = jobId
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-|-$/g, '');
  const base = `clipserve-${slug || 'job'}`;
  const max = 52;
  if (base.length <= max && slug === jobId) return base;
  const hash = crypto.createHash('sha256').update(jobId).digest('hex').slice(0, 8);
  return `${base.slice(0, max - 9).replace(/-$/, '')}-${hash}`;
}

/** A label value for the job id: [A-Za-z0-9_.-], at most 63, alphanumeric at both ends. */
export function jobLabelValue(jobId: string): string {
  const cleaned = jobId.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  if (cleaned.length > 0 && cleaned.length <= 63 && cleaned === jobId) return cleaned;
  return trainingJobName(jobId);
}

function podLabels(spec: TrainingJobSpec): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'clipserve',
    'app.kubernetes.io/component': 'finetune',
    'app.kubernetes.io/managed-by': 'clipserve',
    ...spec.pod?.labels,
    [JOB_LABEL]: jobLabelValue(spec.jobId),
  };
}

/** Builds the Job (and, for several nodes, the headless Service) for one fine-tune. */
export function buildTrainingManifests(spec: TrainingJobSpec): TrainingManifests {
  const name = trainingJobName(spec.jobId);
  const nodes = spec.hp.nodes;
  const gpus = spec.hp.gpus_per_node;
  const multiNode = nodes > 1;
  const labels = podLabels(spec);
  const pod = spec.pod ?? {};
  const metadata = { name, namespace: spec.namespace, labels, annotations: { [JOB_ID_ANNOTATION]: spec.jobId } };
  // Node 0 of an Indexed Job with `subdomain` is reachable as <job>-0.<service> within the namespace.
  const { command, args } = trainingCommand(
    { nodes, gpusPerNode: gpus, masterAddr: multiNode ? `${name}-0.${name}` : undefined },
    spec.trainerArgs,
  );

  const env = [
    // Trainer logs reach `kubectl logs` (and the job's events) line by line, not in 4 KiB blocks.
    { name: 'PYTHONUNBUFFERED', value: '1' },
    // The root filesystem is read-only: caches (torch, HF, matplotlib) go to the scratch volume.
    { name: 'HOME', value: '/tmp' },
    { name: 'XDG_CACHE_HOME', value: '/tmp/.cache' },
    // The uid has no passwd entry in most images; Python's getpass.getuser() (torch's cache dirs) reads USER first.
    { name: 'USER', value: 'trainer' },
    ...(multiNode
      ? [
          {
            name: 'JOB_COMPLETION_INDEX',
            valueFrom: { fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" } },
          },
        ]
      : []),
  ];

  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata,
    spec: {
      completions: nodes,
      parallelism: nodes,
      ...(multiNode ? { completionMode: 'Indexed' } : {}),
      // A failed training pod fails the job (a crash repeats); an evicted or preempted one
      // (DisruptionTarget) is replaced and resumes from its last epoch checkpoint (--resume latest).
      backoffLimit: 0,
      podFailurePolicy: {
        rules: [{ action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget', status: 'True' }] }],
      },
      ttlSecondsAfterFinished: pod.ttlSecondsAfterFinished ?? 86400,
      ...(pod.activeDeadlineSeconds !== undefined ? { activeDeadlineSeconds: pod.activeDeadlineSeconds } : {}),
      template: {
        metadata: { labels, annotations: { [JOB_ID_ANNOTATION]: spec.jobId } },
        spec: {
          restartPolicy: 'Never',
          ...(multiNode ? { subdomain: name } : {}),
          ...(pod.serviceAccountName ? { serviceAccountName: pod.serviceAccountName } : {}),
          // The trainer never talks to the Kubernetes API.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(pod.nodeSelector ? { nodeSelector: pod.nodeSelector } : {}),
          tolerations: pod.tolerations ?? defaultGpuTolerations(pod.gpuResource),
          ...(pod.imagePullSecrets?.length ? { imagePullSecrets: pod.imagePullSecrets.map((n) => ({ name: n })) } : {}),
          securityContext: {
            runAsNonRoot: true,
            runAsUser: pod.runAsUser ?? 10001,
            runAsGroup: pod.runAsGroup ?? 10001,
            fsGroup: pod.runAsGroup ?? 10001,
            fsGroupChangePolicy: 'OnRootMismatch',
            seccompProfile: { type: 'RuntimeDefault' },
          },
          containers: [
            {
              name: CONTAINER_NAME,
              image: spec.image,
              imagePullPolicy: 'IfNotPresent',
              command,
              args,
              env,
              ...(multiNode
                ? { ports: [{ name: 'rendezvous', containerPort: RENDEZVOUS_PORT, protocol: 'TCP' }] }
                : {}),
              resources: {
                requests: {
                  cpu: pod.requests?.cpu ?? String(4 * gpus),
                  memory: pod.requests?.memory ?? `${16 * gpus}Gi`,
                },
                limits: {
                  [pod.gpuResource ?? DEFAULT_GPU_RESOURCE]: String(gpus),
                  ...(pod.limits?.cpu ? { cpu: pod.limits.cpu } : {}),
                  memory: pod.limits?.memory ?? pod.requests?.memory ?? `${16 * gpus}Gi`,
                },
              },
              securityContext: {
                allowPrivilegeEscalation: false,
                privileged: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'data', mountPath: spec.storage.mountPath },
                { name: 'dshm', mountPath: '/dev/shm' },
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: 'data', persistentVolumeClaim: { claimName: spec.storage.pvcName } },
            { name: 'dshm', emptyDir: { medium: 'Memory', sizeLimit: pod.shmSize ?? `${8 * gpus}Gi` } },
            { name: 'tmp', emptyDir: { sizeLimit: '20Gi' } },
          ],
        },
      },
    },
  };

  if (!multiNode) return { job };
  const service: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: spec.namespace, labels, annotations: { [JOB_ID_ANNOTATION]: spec.jobId } },
    spec: {
      clusterIP: 'None',
      // Rank 0's DNS record must exist while the pods start, long before any of them is Ready.
      publishNotReadyAddresses: true,
      selector: { [JOB_LABEL]: labels[JOB_LABEL] },
      ports: [{ name: 'rendezvous', port: RENDEZVOUS_PORT, targetPort: RENDEZVOUS_PORT, protocol: 'TCP' }],
    },
  };
  return { job, service };
}

/** Makes the Service a dependent of the Job, so deleting the Job garbage-collects it too. */
export function ownedByJob(service: V1Service, job: { name: string; uid: string }): V1Service {
  const owner: V1OwnerReference = { apiVersion: 'batch/v1', kind: 'Job', name: job.name, uid: job.uid };
  return { ...service, metadata: { ...service.metadata, ownerReferences: [owner] } };
}
