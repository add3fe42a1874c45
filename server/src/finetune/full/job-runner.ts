/**
 * Runs one training Job on the cluster and follows it to the end: submits the Job (and the
 * rendezvous Service), polls the Job's conditions and its pods' phases, streams every pod's log
 * into job events, and resolves on condition Complete or rejects on Failed. Cancellation (the
 * job's AbortSignal) deletes the Job at once with propagationPolicy Background, which takes its
 * pods and the Service with it.
 *
 * Polling rather than a watch: one GET of the Job and one LIST of its pods per interval is cheap,
 * and unlike a watch it needs no resourceVersion bookkeeping across the API server's watch
 * timeouts; a resumed server (Job already there: 409) simply adopts the Job and goes on following.
 */
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import { FineTuneCancelledError, SHUTDOWN_ABORT_REASON, type FineTuneMethodEvent } from '../method';
import type { KubeTrainingApi } from './kube-client';
import { CONTAINER_NAME, JOB_ID_ANNOTATION, ownedByJob, POD_JOB_NAME_LABEL, type TrainingManifests } from './manifests';

/** Waiting reasons that never resolve by themselves: the Job would sit there forever. */
const FATAL_WAITING_REASONS = new Set(['InvalidImageName', 'ErrImageNeverPull', 'CreateContainerConfigError', 'CreateContainerError']);
const LOG_TAIL_LINES = 20;

// On an abort with SHUTDOWN_ABORT_REASON the training Job keeps running on the cluster and the next
// run of the same fine-tune (after the restart) adopts it; any other abort is a cancel and deletes it.
export { SHUTDOWN_ABORT_REASON };

export class TrainingJobFailedError extends Error {
  constructor(
    message: string,
    readonly jobName: string,
    /** The last lines each failed pod logged. */
    readonly logTail: Record<string, string[]>,
  ) {
    super(message);
    this.name = 'TrainingJobFailedError';
  }
}

export interface RunTrainingJobOptions {
  api: KubeTrainingApi;
  jobId: string;
  namespace: string;
  manifests: TrainingManifests;
  signal: AbortSignal;
  emit(event: FineTuneMethodEvent): void;
  /** Each log line of a training pod (timestamp removed). */
  onLogLine?(line: string, pod: string): void;
  /** Between status polls; default 5 s. */
  pollIntervalMs?: number;
  /** After the Job ends, how long to wait for the log streams to deliver their last lines; default 10 s. */
  logDrainMs?: number;
}

interface PodFollow {
  /** A log stream is open. */
  active: boolean;
  /** The pod's container has exited and its log was read to the end. */
  done: boolean;
  lastTimestamp?: string;
  tail: string[];
  stream?: Promise<void>;
  lastStatus?: string;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function condition(job: V1Job, type: string): { reason?: string; message?: string } | undefined {
  const c = job.status?.conditions?.find((x) => x.type === type && x.status === 'True');
  return c ? { reason: c.reason, message: c.message } : undefined;
}

/** "Running", "Pending (ImagePullBackOff: …)", "Failed (exit 1, Error)": what a human needs. */
function podStatus(pod: V1Pod): { phase: string; reason?: string; message?: string } {
  const phase = pod.status?.phase ?? 'Pending';
  const cs = pod.status?.containerStatuses?.find((c) => c.name === CONTAINER_NAME) ?? pod.status?.containerStatuses?.[0];
  const waiting = cs?.state?.waiting;
  const terminated = cs?.state?.terminated;
  if (terminated) {
    return { phase, reason: `exit ${terminated.exitCode}${terminated.reason ? `, ${terminated.reason}` : ''}`, message: terminated.message };
  }
  if (waiting?.reason && waiting.reason !== 'ContainerCreating') return { phase, reason: waiting.reason, message: waiting.message };
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return { phase, reason: unscheduled.reason, message: unscheduled.message };
  if (pod.status?.reason) return { phase, reason: pod.status.reason, message: pod.status.message };
  return { phase };
}

function containerStarted(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  if (phase === 'Running' || phase === 'Succeeded') return true;
  if (phase === 'Failed') return Boolean(pod.status?.containerStatuses?.some((c) => c.state?.terminated?.startedAt || c.state?.terminated?.exitCode !== undefined));
  return false;
}

function podFinished(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

export async function runTrainingJob(o: RunTrainingJobOptions): Promise<void> {
  const { api, namespace, signal } = o;
  const jobName = o.manifests.job.metadata!.name!;
  const pollMs = o.pollIntervalMs ?? 5000;
  if (signal.aborted) throw new FineTuneCancelledError();

  let created = await api.createJob(namespace, o.manifests.job);
  if (!created) {
    // A Job of this name exists: ours from before a restart (adopt it), or a stranger's.
    const existing = await api.readJob(namespace, jobName);
    const owner = existing?.metadata?.annotations?.[JOB_ID_ANNOTATION];
    if (!existing || owner !== o.jobId) {
      throw new TrainingJobFailedError(`a Job named ${namespace}/${jobName} already exists and does not belong to fine-tune ${o.jobId}`, jobName, {});
    }
    created = existing;
    o.emit({ type: 'log', message: `following the existing training Job ${namespace}/${jobName}`, data: { job: jobName, namespace } });
  } else {
    o.emit({ type: 'log', message: `created training Job ${namespace}/${jobName}`, data: { job: jobName, namespace } });
  }

  // Deleting on abort starts at once, not at the next poll: cancel frees the GPUs within seconds.
  let deletion: Promise<void> | undefined;
  const follows = new Map<string, PodFollow>();
  const followAbort = new AbortController();
  const onAbort = (): void => {
    followAbort.abort();
    if (signal.reason === SHUTDOWN_ABORT_REASON) {
      deletion ??= Promise.resolve(o.emit({ type: 'log', message: `the server is stopping: training Job ${namespace}/${jobName} keeps running and is followed again after the restart`, data: { job: jobName } }));
      return;
    }
    deletion ??= api.deleteJob(namespace, jobName).then(
      (existed) => o.emit({ type: 'log', message: existed ? `deleted training Job ${namespace}/${jobName}` : `training Job ${namespace}/${jobName} was already gone`, data: { job: jobName } }),
      (err: Error) => o.emit({ type: 'log', message: `could not delete training Job ${namespace}/${jobName}: ${err.message}`, data: { job: jobName } }),
    );
  };
  signal.addEventListener('abort', onAbort, { once: true });

  const startFollow = (podName: string, f: PodFollow): void => {
    f.active = true;
    const onLine = (raw: string): void => {
      const sp = raw.indexOf(' ');
      const ts = sp > 0 ? raw.slice(0, sp) : '';
      const text = sp > 0 ? raw.slice(sp + 1) : raw;
      // A resumed follow starts at the whole second of sinceTime: skip what was already seen.
      if (f.lastTimestamp && ts && ts <= f.lastTimestamp) return;
      if (ts) f.lastTimestamp = ts;
      f.tail.push(text);
      if (f.tail.length > LOG_TAIL_LINES) f.tail.shift();
      o.emit({ type: 'log', message: text, data: { pod: podName } });
      o.onLogLine?.(text, podName);
    };
    f.stream = api
      .followLog(namespace, podName, CONTAINER_NAME, onLine, { sinceTime: f.lastTimestamp, signal: followAbort.signal })
      .catch((err: Error) => {
        o.emit({ type: 'log', message: `log of pod ${podName} unavailable: ${err.message}`, data: { pod: podName } });
      })
      .finally(() => {
        f.active = false;
      });
  };

  /** Updates pod events and log follows; returns the pods. */
  const observePods = async (): Promise<V1Pod[]> => {
    const pods = await api.listPods(namespace, `${POD_JOB_NAME_LABEL}=${jobName}`);
    for (const pod of pods) {
      const podName = pod.metadata?.name;
      if (!podName) continue;
      let f = follows.get(podName);
      if (!f) follows.set(podName, (f = { active: false, done: false, tail: [] }));
      const st = podStatus(pod);
      const key = `${st.phase}|${st.reason ?? ''}`;
      if (key !== f.lastStatus) {
        f.lastStatus = key;
        const detail = st.reason ? ` (${st.reason}${st.message ? `: ${st.message}` : ''})` : '';
        o.emit({ type: 'log', message: `pod ${podName}: ${st.phase}${detail}`, data: { pod: podName, phase: st.phase, ...(st.reason ? { reason: st.reason } : {}) } });
      }
      if (st.reason && FATAL_WAITING_REASONS.has(st.reason)) {
        // Such a pod never ends by itself: take the Job down before reporting.
        await api.deleteJob(namespace, jobName).catch(() => undefined);
        throw new TrainingJobFailedError(`training pod ${podName} cannot start: ${st.reason}${st.message ? `: ${st.message}` : ''}`, jobName, {});
      }
      if (!f.active && !f.done && containerStarted(pod)) {
        // A stream that ended while the pod still ran was a dropped connection (or the exit):
        // resume it. Once the container has exited, one read to the end is the whole log.
        if (podFinished(pod)) f.done = true;
        startFollow(podName, f);
      }
    }
    return pods;
  };

  const drainLogs = async (ms: number): Promise<void> => {
    const open = [...follows.values()].filter((f) => f.active && f.stream !== undefined).map((f) => f.stream!);
    if (open.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(open), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  };

  try {
    if (o.manifests.service) {
      const uid = created.metadata?.uid;
      const service = uid ? ownedByJob(o.manifests.service, { name: jobName, uid }) : o.manifests.service;
      await api.createService(namespace, service);
    }
    for (;;) {
      if (signal.aborted) break;
      const job = await api.readJob(namespace, jobName);
      if (signal.aborted) break;
      if (!job) throw new TrainingJobFailedError(`training Job ${namespace}/${jobName} was deleted outside clipserve`, jobName, {});
      const pods = await observePods();
      const complete = condition(job, 'Complete');
      const failed = condition(job, 'Failed') ?? condition(job, 'FailureTarget');
      if (complete || failed) {
        // One more pass so pods that ended since the last poll get their final log lines read.
        await drainLogs(o.logDrainMs ?? 10_000);
        for (const pod of pods) {
          const f = follows.get(pod.metadata?.name ?? '');
          if (f && !f.active && !f.done && containerStarted(pod)) {
            f.done = true;
            startFollow(pod.metadata!.name!, f);
          }
        }
        await drainLogs(o.logDrainMs ?? 10_000);
        if (complete) {
          o.emit({ type: 'log', message: `training Job ${namespace}/${jobName} completed`, data: { job: jobName, succeeded: job.status?.succeeded ?? 0 } });
          return;
        }
        const failedPods = pods.filter((p) => p.status?.phase === 'Failed');
        const podNotes = failedPods.map((p) => {
          const st = podStatus(p);
          return `pod ${p.metadata?.name}: ${st.reason ?? st.phase}${st.message ? ` (${st.message.trim()})` : ''}`;
        });
        const logTail: Record<string, string[]> = {};
        for (const p of failedPods) {
          const f = follows.get(p.metadata?.name ?? '');
          if (f?.tail.length) logTail[p.metadata!.name!] = f.tail.slice();
        }
        const lastLines = Object.values(logTail)[0]?.slice(-5) ?? [];
        throw new TrainingJobFailedError(
          `training Job ${namespace}/${jobName} failed: ${failed!.reason ?? 'Failed'}${failed!.message ? `: ${failed!.message}` : ''}` +
            (podNotes.length ? `; ${podNotes.join('; ')}` : '') +
            (lastLines.length ? `; last log lines: ${lastLines.join(' | ')}` : ''),
          jobName,
          logTail,
        );
      }
      await sleep(pollMs, signal);
    }
    // Aborted: the abort listener has started the deletion; report it once done.
    await deletion;
    throw new FineTuneCancelledError();
  } catch (err) {
    if (signal.aborted) {
      onAbort();
      await deletion;
      throw new FineTuneCancelledError();
    }
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
    followAbort.abort();
    await Promise.allSettled([...follows.values()].map((f) => f.stream ?? Promise.resolve()));
  }
}
