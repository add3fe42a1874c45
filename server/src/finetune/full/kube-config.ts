/**
 * Finds the cluster the `full` method submits to: an explicit kubeconfig file, else $KUBECONFIG or
 * ~/.kube/config, else the pod's own ServiceAccount when the server runs in a cluster. Returns
 * null when there is none, rather than client-node's fallback to http://localhost:8080, so that
 * `full` jobs fail validation with a clear message instead of connection errors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeClient } from './kube-client';

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export function loadKubeConfig(opts: { kubeconfig?: string } = {}): KubeConfig | null {
  const k8s = kubeClient();
  const kc = new k8s.KubeConfig();
  if (opts.kubeconfig) {
    if (!fs.existsSync(opts.kubeconfig)) throw new Error(`kubeconfig not found: ${opts.kubeconfig}`);
    kc.loadFromFile(opts.kubeconfig);
    return kc;
  }
  const fromEnv = (process.env.KUBECONFIG ?? '').split(path.delimiter).filter((f) => f && fs.existsSync(f));
  const home = path.join(process.env.HOME || os.homedir(), '.kube', 'config');
  // Several $KUBECONFIG files merge as kubectl merges them: the first file's current context wins.
  // (Read here rather than through client-node's loadFromDefault, so that the environment this
  // module sees is the one that decides.)
  const files = fromEnv.length > 0 ? fromEnv : fs.existsSync(home) ? [home] : [];
  if (files.length > 0) {
    kc.loadFromFile(files[0]);
    for (const file of files.slice(1)) {
      const more = new k8s.KubeConfig();
      more.loadFromFile(file);
      kc.mergeConfig(more, true);
    }
    return kc.getCurrentCluster() ? kc : null;
  }
  if (
    process.env.KUBERNETES_SERVICE_HOST &&
    process.env.KUBERNETES_SERVICE_PORT &&
    fs.existsSync(SERVICE_ACCOUNT_TOKEN)
  ) {
    kc.loadFromCluster();
    return kc;
  }
  return null;
}
