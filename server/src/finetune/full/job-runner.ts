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
const FATAL_WAITING_REASONS = new Set([
  'InvalidImageName',
  'ErrImageNeverPull',
  'CreateContainerConfigError',
  'CreateContainerError',
]);
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
  const cs =
    pod.status?.containerStatuses?.find((c) => c.name === CONTAINER_NAME) ?? pod.status?.containerStatuses?.[0];
  const waiting = cs?.state?.waiting;
  const terminated = cs?.state?.terminated;
  if (terminated) {
    return {
      phase,
      reason: `exit ${terminated.exitCode}${terminated.reason ? `, ${terminated.reason}` : ''}`,
      message: terminated.message,
    };
  }
  if (waiting?.reason && waiting.reason !== 'ContainerCreating')
    return { phase, reason: waiting.reason, message: waiting.message };
  const unscheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return { phase, reason: unscheduled.reason, message: unscheduled.message };
  if (pod.status?.reason) return { phase, reason: pod.status.reason, message: pod.status.message };
  return { phase };
}

function containerStarted(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  if (phase === 'Running' || phase === 'Succeeded') return true;
  if (phase === 'Failed')
    return Boolean(
      pod.status?.containerStatuses?.some(
        (c) => c.state?.terminated?.startedAt || c.state?.terminated?.exitCode !== undefined,
      ),
    );
  return false;
}

function podFinished(pod: V1Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

export async function runTrainingJob(o: RunTrainingJobOptions): Promise<void> {
  if (o.signal.aborted) throw new FineTuneCancelledError();
  const run = new TrainingJobRun(o);
  await run.follow(await run.submit());
}

/**
 * One training Job followed to its end. The state its steps share: the pods' log follows, the
 * controller that stops them, and the deletion started by an abort.
 */
class TrainingJobRun {
  private readonly jobName: string;
  private readonly namespace: string;
  private readonly follows = new Map<string, PodFollow>();
  private readonly followAbort = new AbortController();
  /** Started by the abort listener (a cancel deletes the Job; a shutdown leaves it running). */
  private deletion: Promise<void> | undefined;
  private readonly onAbort = (): void => this.stopOnAbort();

  constructor(private readonly o: RunTrainingJobOptions) {
    this.jobName = o.manifests.job.metadata!.name!;
    this.namespace = o.namespace;
  }

  /** Creates the Job, or adopts ours from before a restart (a stranger's of the same name is refused). */
  async submit(): Promise<V1Job> {
    const { o, namespace, jobName } = this;
    const created = await o.api.createJob(namespace, o.manifests.job);
    if (created) {
      o.emit({
        type: 'log',
        message: `created training Job ${namespace}/${jobName}`,
        data: { job: jobName, namespace },
      });
      return created;
    }
    const existing = await o.api.readJob(namespace, jobName);
    const owner = existing?.metadata?.annotations?.[JOB_ID_ANNOTATION];
    if (!existing || owner !== o.jobId) {
      throw new TrainingJobFailedError(
        `a Job named ${namespace}/${jobName} already exists and does not belong to fine-tune ${o.jobId}`,
        jobName,
        {},
      );
    }
    o.emit({
      type: 'log',
      message: `following the existing training Job ${namespace}/${jobName}`,
      data: { job: jobName, namespace },
    });
    return existing;
  }

  /** Creates the rendezvous Service, then polls until the Job completes (resolves), fails or is cancelled (rejects). */
  async follow(created: V1Job): Promise<void> {
    const { signal } = this.o;
    // Deleting on abort starts at once, not at the next poll: cancel frees the GPUs within seconds.
    signal.addEventListener('abort', this.onAbort, { once: true });
    try {
      await this.createService(created);
      if ((await this.pollUntilEnd()) === 'completed') return;
      // Aborted: the abort listener has started the deletion; report it once done.
      await this.deletion;
      throw new FineTuneCancelledError();
    } catch (err) {
      if (signal.aborted) {
        this.stopOnAbort();
        await this.deletion;
        throw new FineTuneCancelledError();
      }
      throw err;
    } finally {
      signal.removeEventListener('abort', this.onAbort);
      this.followAbort.abort();
      await Promise.allSettled([...this.follows.values()].map((f) => f.stream ?? Promise.resolve()));
    }
  }

  private stopOnAbort(): void {
    const { o, namespace, jobName } = this;
    this.followAbort.abort();
    if (o.signal.reason === SHUTDOWN_ABORT_REASON) {
      this.deletion ??= Promise.resolve(
        o.emit({
          type: 'log',
          message: `the server is stopping: training Job ${namespace}/${jobName} keeps running and is followed again after the restart`,
          data: { job: jobName },
        }),
      );
      return;
    }
    this.deletion ??= o.api.deleteJob(namespace, jobName).then(
      (existed) =>
        o.emit({
          type: 'log',
          message: existed
            ? `deleted training Job ${namespace}/${jobName}`
            : `training Job ${namespace}/${jobName} was already gone`,
          data: { job: jobName },
        }),
      (err: Error) =>
        o.emit({
          type: 'log',
          message: `could not delete training Job ${namespace}/${jobName}: ${err.message}`,
          data: { job: jobName },
        }),
    );
  }

  private async createService(created: V1Job): Promise<void> {
    const service = this.o.manifests.service;
    if (!service) return;
    const uid = created.metadata?.uid;
    await this.o.api.createService(this.namespace, uid ? ownedByJob(service, { name: this.jobName, uid }) : service);
  }

  /** One GET of the Job and one LIST of its pods per interval, until the Job ends or the signal aborts. */
  private async pollUntilEnd(): Promise<'completed' | 'aborted'> {
    const { o, namespace, jobName } = this;
    const { signal } = o;
    for (;;) {
      if (signal.aborted) return 'aborted';
      const job = await o.api.readJob(namespace, jobName);
      if (signal.aborted) return 'aborted';
      if (!job)
        throw new TrainingJobFailedError(
          `training Job ${namespace}/${jobName} was deleted outside clipserve`,
          jobName,
          {},
        );
      const pods = await this.observePods();
      const complete = condition(job, 'Complete');
      const failed = condition(job, 'Failed') ?? condition(job, 'FailureTarget');
      if (complete || failed) {
        await this.readLastLogs(pods);
        if (failed && !complete) throw this.failure(failed, pods);
        o.emit({
          type: 'log',
          message: `training Job ${namespace}/${jobName} completed`,
          data: { job: jobName, succeeded: job.status?.succeeded ?? 0 },
        });
        return 'completed';
      }
      await sleep(o.pollIntervalMs ?? 5000, signal);
    }
  }

  /** Updates pod events and log follows; returns the pods. */
  private async observePods(): Promise<V1Pod[]> {
    const { o, namespace, jobName } = this;
    const pods = await o.api.listPods(namespace, `${POD_JOB_NAME_LABEL}=${jobName}`);
    for (const pod of pods) {
      const podName = pod.metadata?.name;
      if (!podName) continue;
      let f = this.follows.get(podName);
      if (!f) this.follows.set(podName, (f = { active: false, done: false, tail: [] }));
      const st = podStatus(pod);
      const key = `${st.phase}|${st.reason ?? ''}`;
      if (key !== f.lastStatus) {
        f.lastStatus = key;
        const detail = st.reason ? ` (${st.reason}${st.message ? `: ${st.message}` : ''})` : '';
        o.emit({
          type: 'log',
          message: `pod ${podName}: ${st.phase}${detail}`,
          data: { pod: podName, phase: st.phase, ...(st.reason ? { reason: st.reason } : {}) },
        });
      }
      if (st.reason && FATAL_WAITING_REASONS.has(st.reason)) {
        // Such a pod never ends by itself: take the Job down before reporting.
        await o.api.deleteJob(namespace, jobName).catch(() => undefined);
        throw new TrainingJobFailedError(
          `training pod ${podName} cannot start: ${st.reason}${st.message ? `: ${st.message}` : ''}`,
          jobName,
          {},
        );
      }
      if (!f.active && !f.done && containerStarted(pod)) {
        // A stream that ended while the pod still ran was a dropped connection (or the exit):
        // resume it. Once the container has exited, one read to the end is the whole log.
        if (podFinished(pod)) f.done = true;
        this.startFollow(podName, f);
      }
    }
    return pods;
  }

  private startFollow(podName: string, f: PodFollow): void {
    const { o } = this;
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
    f.stream = o.api
      .followLog(this.namespace, podName, CONTAINER_NAME, onLine, {
        sinceTime: f.lastTimestamp,
        signal: this.followAbort.signal,
      })
      .catch((err: Error) => {
        o.emit({ type: 'log', message: `log of pod ${podName} unavailable: ${err.message}`, data: { pod: podName } });
      })
      .finally(() => {
        f.active = false;
      });
  }

  /** The Job has ended: one more pass so pods that ended since the last poll get their final log lines read. */
  private async readLastLogs(pods: V1Pod[]): Promise<void> {
    const ms = this.o.logDrainMs ?? 10_000;
    await this.drainLogs(ms);
    for (const pod of pods) {
      const f = this.follows.get(pod.metadata?.name ?? '');
      if (f && !f.active && !f.done && containerStarted(pod)) {
        f.done = true;
        this.startFollow(pod.metadata!.name!, f);
      }
    }
    await this.drainLogs(ms);
  }

  private async drainLogs(ms: number): Promise<void> {
    const open = [...this.follows.values()].filter((f) => f.active && f.stream !== undefined).map((f) => f.stream!);
    if (open.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(open), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** The error of a failed Job: its condition, each failed pod's reason, and their last log lines. */
  private failure(failed: { reason?: string; message?: string }, pods: V1Pod[]): TrainingJobFailedError {
    const { namespace, jobName } = this;
    const failedPods = pods.filter((p) => p.status?.phase === 'Failed');
    const podNotes = failedPods.map((p) => {
      const st = podStatus(p);
      return `pod ${p.metadata?.name}: ${st.reason ?? st.phase}${st.message ? ` (${st.message.trim()})` : ''}`;
    });
    const logTail: Record<string, string[]> = {};
    for (const p of failedPods) {
      const f = this.follows.get(p.metadata?.name ?? '');
      if (f?.tail.length) logTail[p.metadata!.name!] = f.tail.slice();
    }
    const lastLines = Object.values(logTail)[0]?.slice(-5) ?? [];
    return new TrainingJobFailedError(
      `training Job ${namespace}/${jobName} failed: ${failed.reason ?? 'Failed'}${failed.message ? `: ${failed.message}` : ''}` +
        (podNotes.length ? `; ${podNotes.join('; ')}` : '') +
        (lastLines.length ? `; last log lines: ${lastLines.join(' | ')}` : ''),
      jobName,
      logTail,
    );
  }
}
