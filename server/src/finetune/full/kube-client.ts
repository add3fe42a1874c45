/**
 * The Kubernetes API calls a `full` fine-tune makes, through @kubernetes/client-node: create, get
 * and delete batch/v1 Jobs, create the rendezvous Service, list a Job's pods and follow their logs.
 * RBAC (deploy/k8s/base/role.yaml): jobs create/get/delete, pods list, pods/log get, services create.
 *
 * Loading: @kubernetes/client-node 1.x is published as ES modules only. Node ≥ 20.19 loads those
 * through require(); jest's CommonJS module registry, which stands in for `require` (and for
 * module.createRequire) inside tests, cannot. So the package is required through Node's own
 * loader, reached with process.getBuiltinModule, which behaves identically in both.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { BatchV1Api, CoreV1Api, KubeConfig, V1Job, V1Pod, V1Service } from '@kubernetes/client-node';

export type KubeClientModule = typeof import('@kubernetes/client-node');

let cachedModule: KubeClientModule | undefined;

/** The @kubernetes/client-node module (loaded once). */
export function kubeClient(): KubeClientModule {
  if (cachedModule) return cachedModule;
  const nodeModule = process.getBuiltinModule('node:module');
  const requireNative = nodeModule.createRequire(__filename);
  try {
    cachedModule = requireNative('@kubernetes/client-node') as KubeClientModule;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_REQUIRE_ESM') {
      throw new Error(
        `the Kubernetes client (@kubernetes/client-node, ES modules only) needs Node >= 20.19; this is ${process.version}`,
      );
    }
    throw e;
  }
  return cachedModule;
}

/** A failed Kubernetes API call: HTTP status and the API server's own message. */
export class KubernetesApiError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number | undefined,
    detail: string,
  ) {
    super(`Kubernetes API: ${operation} failed${status ? ` (HTTP ${status})` : ''}: ${detail}`);
    this.name = 'KubernetesApiError';
  }
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The `message` of a metav1.Status body when the API server sent one. */
function detailOf(err: unknown): string {
  const body = (err as { body?: unknown })?.body;
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.slice(0, 500) || (err as Error).message;
    }
  }
  const message = (parsed as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message : ((err as Error)?.message ?? String(err));
}

function apiError(operation: string, err: unknown): KubernetesApiError {
  return new KubernetesApiError(operation, statusOf(err), detailOf(err));
}

export interface FollowLogOptions {
  /** RFC 3339 time: only lines from then on (a resumed follow). */
  sinceTime?: string;
  signal?: AbortSignal;
}

export class KubeTrainingApi {
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;

  constructor(readonly kubeConfig: KubeConfig) {
    const k8s = kubeClient();
    this.batch = kubeConfig.makeApiClient(k8s.BatchV1Api);
    this.core = kubeConfig.makeApiClient(k8s.CoreV1Api);
  }

  /** Creates the Job; `undefined` when one of that name exists already (409). */
  async createJob(namespace: string, body: V1Job): Promise<V1Job | undefined> {
    try {
      return await this.batch.createNamespacedJob({ namespace, body });
    } catch (e) {
      if (statusOf(e) === 409) return undefined;
      throw apiError(`create Job ${namespace}/${body.metadata?.name}`, e);
    }
  }

  /** The Job, or `undefined` when it does not exist (404). */
  async readJob(namespace: string, name: string): Promise<V1Job | undefined> {
    try {
      return await this.batch.readNamespacedJob({ name, namespace });
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw apiError(`get Job ${namespace}/${name}`, e);
    }
  }

  /** Deletes the Job; its pods (and the Service it owns) are garbage-collected in the background.
   *  Resolves false when there was no such Job. */
  async deleteJob(namespace: string, name: string): Promise<boolean> {
    try {
      await this.batch.deleteNamespacedJob({ name, namespace, propagationPolicy: 'Background' });
      return true;
    } catch (e) {
      if (statusOf(e) === 404) return false;
      throw apiError(`delete Job ${namespace}/${name}`, e);
    }
  }

  /** Creates the Service; an existing one of that name (409, a resumed job) is kept. */
  async createService(namespace: string, body: V1Service): Promise<void> {
    try {
      await this.core.createNamespacedService({ namespace, body });
    } catch (e) {
      if (statusOf(e) === 409) return;
      throw apiError(`create Service ${namespace}/${body.metadata?.name}`, e);
    }
  }

  async listPods(namespace: string, labelSelector: string): Promise<V1Pod[]> {
    try {
      const list = await this.core.listNamespacedPod({ namespace, labelSelector });
      return list.items ?? [];
    } catch (e) {
      throw apiError(`list pods ${namespace} (${labelSelector})`, e);
    }
  }

  /**
   * Follows a container's log (GET …/pods/<pod>/log?follow=true&timestamps=true), calling onLine
   * with each complete line (still carrying its timestamp). Resolves when the API server ends the
   * stream (the container exited, or the connection was closed) or the signal aborts it.
   * client-node's Log helper pipes the body without surfacing errors or ends of a dropped
   * connection, so this makes the request itself with the KubeConfig's TLS and credentials.
   */
  async followLog(
    namespace: string,
    pod: string,
    container: string,
    onLine: (line: string) => void,
    opts: FollowLogOptions = {},
  ): Promise<void> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster)
      throw new KubernetesApiError(`log of pod ${namespace}/${pod}`, undefined, 'no current cluster in the kubeconfig');
    const url = new URL(
      `${cluster.server.replace(/\/+$/, '')}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/log`,
    );
    url.searchParams.set('container', container);
    url.searchParams.set('follow', 'true');
    url.searchParams.set('timestamps', 'true');
    if (opts.sinceTime) url.searchParams.set('sinceTime', opts.sinceTime);
    const options: https.RequestOptions = { method: 'GET', headers: {} };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const transport = url.protocol === 'https:' ? https : http;
    await new Promise<void>((resolve, reject) => {
      if (opts.signal?.aborted) return resolve();
      const req = transport.request(url, { ...options, signal: opts.signal }, (res) => {
        if (res.statusCode !== 200) {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c.length < 4096 ? c : ''));
          res.on('end', () => reject(apiError(`log of pod ${namespace}/${pod}`, { code: res.statusCode, body })));
          res.on('error', () =>
            reject(new KubernetesApiError(`log of pod ${namespace}/${pod}`, res.statusCode, 'connection lost')),
          );
          return;
        }
        res.setEncoding('utf8');
        let pending = '';
        // onLine is the caller's (it parses and records trainer output): what it throws fails
        // this follow, never escapes the stream's listener into the process.
        let failed = false;
        const lines = (text: string, last: boolean): void => {
          try {
            pending += text;
            let nl: number;
            while ((nl = pending.indexOf('\n')) >= 0) {
              onLine(pending.slice(0, nl).replace(/\r$/, ''));
              pending = pending.slice(nl + 1);
            }
            if (last && pending) onLine(pending);
          } catch (err) {
            failed = true;
            res.destroy();
            reject(err);
          }
        };
        res.on('data', (chunk: string) => {
          if (!failed) lines(chunk, false);
        });
        const finish = (): void => {
          if (failed) return;
          lines('', true);
          pending = '';
          resolve();
        };
        res.on('end', finish);
        // A dropped connection or an abort ends the follow like a normal end: the caller decides
        // whether to resume from the last timestamp it saw.
        res.on('error', finish);
        res.on('aborted', finish);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.name === 'AbortError' || opts.signal?.aborted) resolve();
        else reject(new KubernetesApiError(`log of pod ${namespace}/${pod}`, undefined, err.message));
      });
      req.end();
    });
  }
}
