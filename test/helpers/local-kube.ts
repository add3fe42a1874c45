/**
 * A Kubernetes API stand-in on 127.0.0.1 that RUNS each Job it is given: the Job's container
 * command and args (Kubernetes `$$(` escapes undone) as a local process with the container's env,
 * on this machine's filesystem, which stands in for the shared volume (mounted at the same path
 * in the pod as in the server). Pod phase follows the process (Running → Succeeded / Failed with
 * its exit code), the pod log is its stdout+stderr with RFC 3339 timestamps, DELETE kills it.
 * It answers only the calls the `full` runner makes (kube-client.ts), so `clipserve serve` with a
 * kubeconfig pointing here takes exactly the production path, minus Kubernetes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1Job, V1Pod } from '@kubernetes/client-node';

/** A JSON answer, as the API server sends it. */
export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** A Kubernetes `Status` failure (what client-node turns into an ApiException). */
export function sendStatus(res: http.ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
}

/** The request's JSON body, if any. */
export async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks).toString('utf8');
  return raw ? JSON.parse(raw) : undefined;
}

interface RunningJob {
  job: V1Job;
  child: ChildProcess;
  log: Array<{ t: string; line: string }>;
  exit?: number;
  listeners: Set<() => void>;
}

export class LocalKubeApi {
  readonly jobs = new Map<string, RunningJob>();
  private server!: http.Server;
  port = 0;

  /** `env`: added to every container's environment (e.g. PATH, PYTHONPATH for the local python). */
  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly token = 'local-token',
  ) {}

  async start(): Promise<void> {
    this.server = http.createServer(
      (req, res) =>
        void this.handle(req, res).catch((err: Error) => sendStatus(res, 500, 'InternalError', err.message)),
    );
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const j of this.jobs.values()) if (j.exit === undefined) j.child.kill('SIGKILL');
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** A kubeconfig file for `clipserve serve` (KUBECONFIG). */
  writeKubeconfig(file: string, namespace: string): void {
    fs.writeFileSync(
      file,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        `- name: local\n  cluster:\n    server: http://127.0.0.1:${this.port}\n    insecure-skip-tls-verify: true`,
        'users:',
        `- name: clipserve\n  user:\n    token: ${this.token}`,
        'contexts:',
        `- name: local\n  context:\n    cluster: local\n    user: clipserve\n    namespace: ${namespace}`,
        'current-context: local',
        '',
      ].join('\n'),
    );
  }

  /** The whole log of a Job's pod (for failure messages). */
  logOf(jobName: string): string {
    return (this.jobs.get(jobName)?.log ?? []).map((l) => l.line).join('\n');
  }

  private run(job: V1Job): RunningJob {
    const c = job.spec!.template.spec!.containers[0];
    const unescape = (s: string): string => s.replace(/\$\$\(/g, '$(');
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.env };
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    const child = spawn(c.command![0], [...c.command!.slice(1), ...(c.args ?? []).map(unescape)], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const r: RunningJob = { job, child, log: [], listeners: new Set() };
    let last = 0;
    const onData =
      (pending: { s: string }) =>
      (b: Buffer): void => {
        pending.s += b.toString('utf8');
        const lines = pending.s.split('\n');
        pending.s = lines.pop()!;
        for (const line of lines) {
          // Strictly increasing timestamps, so the runner's resume-by-sinceTime skips nothing.
          const now = Math.max(Date.now() * 1000, last + 1);
          last = now;
          const t = new Date(Math.floor(now / 1000))
            .toISOString()
            .replace('Z', `${String(now % 1000).padStart(3, '0')}Z`);
          r.log.push({ t, line });
        }
        for (const l of r.listeners) l();
      };
    child.stdout!.on('data', onData({ s: '' }));
    child.stderr!.on('data', onData({ s: '' }));
    child.on('error', (err) => {
      r.log.push({ t: new Date().toISOString(), line: `cannot start ${c.command![0]}: ${err.message}` });
      r.exit = 127;
    });
    child.on('close', (code) => {
      r.exit ??= code ?? 137;
      for (const l of r.listeners) l();
    });
    return r;
  }

  private pod(r: RunningJob): V1Pod {
    const name = r.job.metadata!.name!;
    const phase = r.exit === undefined ? 'Running' : r.exit === 0 ? 'Succeeded' : 'Failed';
    const state =
      r.exit === undefined
        ? { running: { startedAt: new Date() } }
        : { terminated: { exitCode: r.exit, reason: r.exit === 0 ? 'Completed' : 'Error', startedAt: new Date() } };
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `${name}-local`, namespace: r.job.metadata!.namespace, labels: { 'job-name': name } },
      status: {
        phase,
        containerStatuses: [
          { name: 'trainer', ready: phase === 'Running', restartCount: 0, image: '', imageID: '', state },
        ],
      },
    };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url!, 'http://x');
    const body = await readJsonBody(req);
    if (req.headers.authorization !== `Bearer ${this.token}`)
      return sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
    let m: RegExpExecArray | null;
    if ((m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs$/.exec(url.pathname)) && req.method === 'POST') {
      const job = body as V1Job;
      const name = job.metadata!.name!;
      if (this.jobs.has(name)) return sendStatus(res, 409, 'AlreadyExists', `jobs.batch "${name}" already exists`);
      if ((job.spec!.completions ?? 1) !== 1)
        return sendStatus(res, 422, 'Invalid', 'the local stand-in runs single-pod Jobs only');
      job.metadata = { ...job.metadata, namespace: m[1], uid: `uid-${name}` };
      this.jobs.set(name, this.run(job));
      return sendJson(res, 201, job);
    }
    if ((m = /^\/apis\/batch\/v1\/namespaces\/([^/]+)\/jobs\/([^/]+)$/.exec(url.pathname))) {
      const r = this.jobs.get(m[2]);
      if (!r) return sendStatus(res, 404, 'NotFound', `jobs.batch "${m[2]}" not found`);
      if (req.method === 'DELETE') {
        if (r.exit === undefined) r.child.kill('SIGKILL');
        this.jobs.delete(m[2]);
        return sendJson(res, 200, { kind: 'Status', apiVersion: 'v1', status: 'Success' });
      }
      const conditions =
        r.exit === undefined
          ? undefined
          : r.exit === 0
            ? [{ type: 'Complete', status: 'True' }]
            : [
                {
                  type: 'Failed',
                  status: 'True',
                  reason: 'BackoffLimitExceeded',
                  message: 'Job has reached the specified backoff limit',
                },
              ];
      return sendJson(res, 200, {
        ...r.job,
        status: conditions ? { conditions, ...(r.exit === 0 ? { succeeded: 1 } : { failed: 1 }) } : { active: 1 },
      });
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(url.pathname)) && req.method === 'GET') {
      const jm = /^job-name=(.+)$/.exec(url.searchParams.get('labelSelector') ?? '');
      const r = jm ? this.jobs.get(jm[1]) : undefined;
      return sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: {}, items: r ? [this.pod(r)] : [] });
    }
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(url.pathname)) && req.method === 'GET') {
      const r = this.jobs.get(m[2].replace(/-local$/, ''));
      if (!r) return sendStatus(res, 404, 'NotFound', `pods "${m[2]}" not found`);
      const ts = url.searchParams.get('timestamps') === 'true';
      const since = url.searchParams.get('sinceTime');
      res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
      let sent = 0;
      const flush = (): void => {
        for (; sent < r.log.length; sent++) {
          const { t, line } = r.log[sent];
          if (since && t < since) continue;
          res.write(`${ts ? `${t} ` : ''}${line}\n`);
        }
        if (r.exit !== undefined || url.searchParams.get('follow') !== 'true') {
          r.listeners.delete(flush);
          res.end();
        }
      };
      r.listeners.add(flush);
      res.on('close', () => r.listeners.delete(flush));
      flush();
      return;
    }
    return sendStatus(res, 404, 'NotFound', `the local stand-in does not serve ${req.method} ${url.pathname}`);
  }
}
