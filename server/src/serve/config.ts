/**
 * Server configuration: one table of options (flag, environment variable, default, parser) that
 * drives the `clipserve serve` flags and their --help text, `CLIPSERVE_*` environment variables and
 * `--config file.json`, so the three can never disagree. Precedence: flag > environment > config
 * file > default.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { V1Toleration } from '@kubernetes/client-node';
import { defaultCacheRoot } from '../hub/cache';
import {
  parseNodeSelector,
  parseQuantity,
  parseResourceName,
  parseSecretNames,
  parseServiceAccount,
  parseTolerations,
} from './pod-options';

export type Provider = 'auto' | 'cpu' | 'cuda';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface ServeConfig {
  /** Bundle directory or `hf-hub:org/repo[@rev]`; undefined serves the demo bundle. */
  model: string | undefined;
  /** Where the demo bundle and downloaded models are cached. */
  cacheDir: string;
  host: string;
  /** gRPC port; 0 picks a free one (RunningServer.port says which). */
  port: number;
  /** HTTP metrics and probes port; 0 picks a free one. */
  metricsPort: number;
  /** Optional plaintext gRPC port serving only grpc.health.v1 (kubelet probes when TLS is on). */
  healthPort: number | undefined;
  provider: Provider;
  intraOpThreads: number | undefined;
  preprocessWorkers: number | undefined;
  maxBatchSize: number;
  maxQueueDelayMs: number;
  queueBound: number;
  maxMessageBytes: number;
  maxItemsPerRequest: number;
  /** Longest text accepted, in UTF-16 code units; tokenization runs on the event loop. */
  maxTextChars: number;
  maxImageBytes: number;
  maxImagePixels: number;
  shutdownGraceSeconds: number;
  logLevel: LogLevel;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  /** With a client CA, clients must present a certificate it signed (mutual TLS). */
  tlsClientCa: string | undefined;
  /** Scoped API keys file (server/src/auth/key-file.ts formats); with apiKeys, calls need a key. */
  apiKeysFile: string | undefined;
  /** API keys from CLIPSERVE_API_KEYS (never a flag: command lines are visible to other users). */
  apiKeys: string | undefined;
  /** With API keys: grpc.health.v1 answers without a key. */
  authOpenHealth: boolean;
  /** With API keys: server reflection answers without a key. */
  authOpenReflection: boolean;
  /** How often the TLS files and the API keys file are checked for changes; 0 = read once. */
  credentialsReloadSeconds: number;
  maxRequestPixels: number;
  imageQueuePixels: number;
  imageDecodeTimeoutSeconds: number;
  finetuneThreads: number;
  /** Most text characters queued for tokenizing, all callers together (admission by cost). */
  textQueueChars: number;
  /** Fraction of each queue bound (items, pixels, characters) one caller may hold while others have items queued too. */
  queueCallerShare: number;
  /** Most preprocessing workers one caller's jobs occupy at once; undefined: all. */
  preprocessWorkersPerCaller: number | undefined;
  callerRate: number;
  callerBurst: number;
  callerConcurrency: number;
  callerInvalidRate: number;
  callerInvalidBurst: number;
  /** Fine-tuning and the model registry: SQLite catalogue + artifacts; undefined disables them. */
  dataDir: string | undefined;
  /** The ReadWriteMany PersistentVolumeClaim holding dataDir, for `full` fine-tune training pods. */
  finetunePvc: string;
  /** Default trainer image for `full` fine-tunes (a job's hyperparameters.image wins). */
  finetuneImage: string | undefined;
  /** Namespace of `full` fine-tune Jobs (a job's hyperparameters.namespace wins; else the kubeconfig's). */
  finetuneNamespace: string | undefined;
  /** Most model versions loaded at once (the active one included); pinned calls load others on demand. */
  maxLoadedVersions: number;
  /** Most bytes of model weights loaded at once across versions; 0 = no byte limit. */
  maxLoadedBytes: number;
  /** `full` training pods: nodeSelector labels (default: none). */
  finetuneNodeSelector: Record<string, string> | undefined;
  /** `full` training pods: tolerations (default: the GPU resource's taint, operator Exists). */
  finetuneTolerations: V1Toleration[] | undefined;
  /** `full` training pods: imagePullSecrets names. */
  finetuneImagePullSecrets: string[] | undefined;
  /** `full` training pods: size of the in-memory /dev/shm (default 8Gi per GPU). */
  finetuneShmSize: string | undefined;
  /** `full` training pods: the extended resource that counts GPUs. */
  finetuneGpuResource: string;
  /** `full` training pods: their ServiceAccount (default: the namespace's default). */
  finetuneServiceAccount: string | undefined;
  /** `full` training pods: DataLoader workers per GPU (open_clip_train --workers). */
  finetuneWorkersPerGpu: number;
  /**
   * OpenAI-compatible HTTP API port (server/src/http). 0 turns the API off (as the issue asks), so
   * "auto" is how a test asks for any free port (RunningServer.httpPort says which).
   */
  httpPort: number | 'auto';
  /** Most bytes one dataset upload (or the part of a zip its CSV names, or a CSV path) may take. */
  datasetMaxBytes: number;
  /** Most pairs (CSV data rows) of one dataset. */
  datasetMaxPairs: number;
  /** Most entries a zip upload may list. */
  datasetMaxZipEntries: number;
  /** Most datasets one API key (or, without keys, the server) keeps. */
  datasetMaxPerKey: number;
  /** What a failed API-key file reload does: keep the last good keys, or deny every keyed call until a good reload. */
  authReloadFailure: 'keep' | 'deny';
  /** PostgreSQL for the catalogue (replicas share it); undefined keeps SQLite in dataDir. */
  databaseUrl: string | undefined;
}

/** A bad option value or combination; the message names the option. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Parser<T> = (raw: unknown, name: string) => T;

export interface OptionSpec {
  key: keyof ServeConfig;
  /** Commander flag syntax, e.g. "--port <n>". */
  flag: string;
  env: string;
  description: string;
  /** Shown in --help; undefined when the default is described in words. */
  defaultValue: unknown;
  parse: Parser<unknown>;
  /** A secret: accepted from the environment or a config file, refused as a command-line flag. */
  secret?: boolean;
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const PROVIDERS: readonly Provider[] = ['auto', 'cpu', 'cuda'];

function intIn(min: number, max = Number.MAX_SAFE_INTEGER): Parser<number> {
  return (raw, name) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(`${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
    }
    return n;
  };
}

function numberIn(min: number, max: number): Parser<number> {
  return (raw, name) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
    if (!Number.isFinite(n) || n < min || n > max)
      throw new ConfigError(`${name} must be a number in [${min}, ${max}], got ${JSON.stringify(raw)}`);
    return n;
  };
}

function oneOf<T extends string>(values: readonly T[]): Parser<T> {
  return (raw, name) => {
    if (typeof raw !== 'string' || !values.includes(raw as T)) {
      throw new ConfigError(`${name} must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
    }
    return raw as T;
  };
}

const nonEmptyString: Parser<string> = (raw, name) => {
  if (typeof raw !== 'string' || raw.trim() === '')
    throw new ConfigError(`${name} must be a non-empty string, got ${JSON.stringify(raw)}`);
  return raw;
};

const boolean: Parser<boolean> = (raw, name) => {
  if (typeof raw === 'boolean') return raw;
  const v = typeof raw === 'string' ? raw.trim().toLowerCase() : undefined;
  if (v === 'true' || v === '1' || v === 'yes') return true;
  if (v === 'false' || v === '0' || v === 'no') return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
};

/** A pod-options parser whose errors become ConfigErrors. */
function podOption<T>(p: (raw: unknown, name: string) => T): Parser<T> {
  return (raw, name) => {
    try {
      return p(raw, name);
    } catch (err) {
      throw new ConfigError((err as Error).message);
    }
  };
}
const databaseUrl: Parser<string> = (raw, name) => {
  const url = nonEmptyString(raw, name);
  if (!/^postgres(ql)?:\/\/./.test(url)) throw new ConfigError(`${name} must be a postgres:// or postgresql:// URL`);
  return url;
};

const PORT = intIn(0, 65535);
const portOrAuto: Parser<number | 'auto'> = (raw, name) => (raw === 'auto' ? 'auto' : PORT(raw, name));
const MiB = 1024 * 1024;

/** Every serve option. Order is the --help order. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  {
    key: 'model',
    flag: '--model <ref>',
    env: 'CLIPSERVE_MODEL',
    description:
      'model bundle directory or hf-hub:<org>/<repo>[@revision] (default: a small random-weight demo bundle, built in --cache-dir on first start; GetModelInfo reports demo=true)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'cacheDir',
    flag: '--cache-dir <dir>',
    env: 'CLIPSERVE_CACHE_DIR',
    description:
      'cache for the demo bundle and downloaded models (default: $XDG_CACHE_HOME/clipserve or ~/.cache/clipserve)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'host',
    flag: '--host <addr>',
    env: 'CLIPSERVE_HOST',
    description: 'address the gRPC, HTTP API and metrics servers bind',
    defaultValue: '0.0.0.0',
    parse: nonEmptyString,
  },
  {
    key: 'port',
    flag: '--port <n>',
    env: 'CLIPSERVE_PORT',
    description: 'gRPC port (0 = pick a free port; the bound port is logged)',
    defaultValue: 50051,
    parse: PORT,
  },
  {
    key: 'metricsPort',
    flag: '--metrics-port <n>',
    env: 'CLIPSERVE_METRICS_PORT',
    description: 'HTTP port for /metrics, /healthz and /readyz (0 = pick a free port)',
    defaultValue: 9090,
    parse: PORT,
  },
  {
    key: 'healthPort',
    flag: '--health-port <n>',
    env: 'CLIPSERVE_HEALTH_PORT',
    description:
      'extra plaintext gRPC port serving only grpc.health.v1, for kubelet probes when TLS is on (default: none)',
    defaultValue: undefined,
    parse: PORT,
  },
  {
    key: 'provider',
    flag: '--provider <name>',
    env: 'CLIPSERVE_PROVIDER',
    description: 'onnxruntime execution provider: auto (cuda when available), cpu or cuda',
    defaultValue: 'auto',
    parse: oneOf(PROVIDERS),
  },
  {
    key: 'intraOpThreads',
    flag: '--intra-op-threads <n>',
    env: 'CLIPSERVE_INTRA_OP_THREADS',
    description: "threads onnxruntime uses inside one operator (default: onnxruntime's choice, the core count)",
    defaultValue: undefined,
    parse: intIn(1, 1024),
  },
  {
    key: 'preprocessWorkers',
    flag: '--preprocess-workers <n>',
    env: 'CLIPSERVE_PREPROCESS_WORKERS',
    description: 'image decode/resize worker threads (default: the core count)',
    defaultValue: undefined,
    parse: intIn(1, 1024),
  },
  {
    key: 'maxBatchSize',
    flag: '--max-batch-size <n>',
    env: 'CLIPSERVE_MAX_BATCH_SIZE',
    description: 'most items in one inference run, per modality',
    defaultValue: 32,
    parse: intIn(1, 4096),
  },
  {
    key: 'maxQueueDelayMs',
    flag: '--max-queue-delay-ms <ms>',
    env: 'CLIPSERVE_MAX_QUEUE_DELAY_MS',
    description:
      'longest a ready item waits for others to fill its batch (0: run at once when the encoder is idle; items arriving during a run still form the next batch)',
    defaultValue: 0,
    parse: numberIn(0, 60_000),
  },
  {
    key: 'queueBound',
    flag: '--queue-bound <n>',
    env: 'CLIPSERVE_QUEUE_BOUND',
    description: 'most items queued per modality; beyond it calls fail fast with RESOURCE_EXHAUSTED',
    defaultValue: 1024,
    parse: intIn(1, 1_000_000),
  },
  {
    key: 'maxMessageBytes',
    flag: '--max-message-bytes <n>',
    env: 'CLIPSERVE_MAX_MESSAGE_BYTES',
    description: 'largest gRPC message received or sent',
    defaultValue: 64 * MiB,
    parse: intIn(1024, 2 ** 31 - 1),
  },
  {
    key: 'maxItemsPerRequest',
    flag: '--max-items-per-request <n>',
    env: 'CLIPSERVE_MAX_ITEMS_PER_REQUEST',
    description: 'most texts + images in one request (Classify counts labels × templates)',
    defaultValue: 256,
    parse: intIn(1, 1_000_000),
  },
  {
    key: 'maxTextChars',
    flag: '--max-text-chars <n>',
    env: 'CLIPSERVE_MAX_TEXT_CHARS',
    description:
      'longest text accepted, in characters (the model reads only its first context-length tokens; this bounds tokenizer work)',
    defaultValue: 16_384,
    parse: intIn(1, 1 << 30),
  },
  {
    key: 'maxImageBytes',
    flag: '--max-image-bytes <n>',
    env: 'CLIPSERVE_MAX_IMAGE_BYTES',
    description: 'largest encoded image accepted',
    defaultValue: 20 * MiB,
    parse: intIn(1),
  },
  {
    key: 'maxImagePixels',
    flag: '--max-image-pixels <n>',
    env: 'CLIPSERVE_MAX_IMAGE_PIXELS',
    description: 'largest width × height accepted, checked before decoding (decompression bombs)',
    defaultValue: 25_000_000,
    parse: intIn(1),
  },
  {
    key: 'shutdownGraceSeconds',
    flag: '--shutdown-grace-seconds <s>',
    env: 'CLIPSERVE_SHUTDOWN_GRACE_SECONDS',
    description: 'on SIGTERM/SIGINT, how long in-flight calls may take to finish before they are cut',
    defaultValue: 25,
    parse: numberIn(0, 3600),
  },
  {
    key: 'logLevel',
    flag: '--log-level <level>',
    env: 'CLIPSERVE_LOG_LEVEL',
    description: `log level: ${LOG_LEVELS.join(', ')}`,
    defaultValue: 'info',
    parse: oneOf(LOG_LEVELS),
  },
  {
    key: 'tlsCert',
    flag: '--tls-cert <file>',
    env: 'CLIPSERVE_TLS_CERT',
    description: 'PEM server certificate chain; with --tls-key serves TLS (default: plaintext)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'tlsKey',
    flag: '--tls-key <file>',
    env: 'CLIPSERVE_TLS_KEY',
    description: 'PEM private key of --tls-cert',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'tlsClientCa',
    flag: '--tls-client-ca <file>',
    env: 'CLIPSERVE_TLS_CLIENT_CA',
    description: 'PEM CA bundle; when given, clients must present a certificate it signed (mutual TLS)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'apiKeysFile',
    flag: '--api-keys-file <file>',
    env: 'CLIPSERVE_API_KEYS_FILE',
    description:
      'scoped API keys (embed, finetune, admin); calls then need "authorization: Bearer <key>". One "<key> <scope>[,<scope>] [name]" per line, or JSON {"keys":[{"key"|"sha256","scopes","name"}]}; keys may be given as sha256:<hex>. CLIPSERVE_API_KEYS adds keys in the line format (";" separates entries). See SECURITY.md (default: none, every call is allowed)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'apiKeys',
    flag: '--api-keys <entries>',
    env: 'CLIPSERVE_API_KEYS',
    description:
      'API keys in the line format; from CLIPSERVE_API_KEYS or a config file only, refused on the command line where other users could read it (default: none)',
    defaultValue: undefined,
    parse: nonEmptyString,
    secret: true,
  },
  {
    key: 'authOpenHealth',
    flag: '--auth-open-health <bool>',
    env: 'CLIPSERVE_AUTH_OPEN_HEALTH',
    description: 'with API keys: grpc.health.v1 answers without a key (probes, load balancers)',
    defaultValue: true,
    parse: boolean,
  },
  {
    key: 'authOpenReflection',
    flag: '--auth-open-reflection <bool>',
    env: 'CLIPSERVE_AUTH_OPEN_REFLECTION',
    description: 'with API keys: server reflection answers without a key',
    defaultValue: true,
    parse: boolean,
  },
  {
    key: 'dataDir',
    flag: '--data-dir <dir>',
    env: 'CLIPSERVE_DATA_DIR',
    description:
      'enables FineTuneService and ModelService: the SQLite catalogue of datasets, jobs and model versions (PostgreSQL instead with --database-url), and their artifacts (default: none, fine-tuning disabled)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'finetunePvc',
    flag: '--finetune-pvc <name>',
    env: 'CLIPSERVE_FINETUNE_PVC',
    description:
      'the ReadWriteMany PersistentVolumeClaim that holds --data-dir, mounted at the same path in `full` fine-tune training pods (which run when a Kubernetes cluster is reachable: in-cluster or KUBECONFIG)',
    defaultValue: 'clipserve-data',
    parse: nonEmptyString,
  },
  {
    key: 'finetuneImage',
    flag: '--finetune-image <ref>',
    env: 'CLIPSERVE_FINETUNE_IMAGE',
    description:
      'default container image for `full` fine-tune training pods (torch + open_clip_train); a job may name its own (default: none: jobs must name one)',
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'finetuneNamespace',
    flag: '--finetune-namespace <ns>',
    env: 'CLIPSERVE_FINETUNE_NAMESPACE',
    description: "namespace of `full` fine-tune Jobs (default: the kubeconfig context's, in-cluster: the pod's)",
    defaultValue: undefined,
    parse: nonEmptyString,
  },
  {
    key: 'maxLoadedVersions',
    flag: '--max-loaded-versions <n>',
    env: 'CLIPSERVE_MAX_LOADED_VERSIONS',
    description:
      'most model versions loaded at once, the active one included: a call pinning another registered version (model_version) loads it on demand and the least recently used inactive version is unloaded to make room (after its calls finish); the active version is never unloaded',
    defaultValue: 2,
    parse: intIn(1, 64),
  },
  {
    key: 'maxLoadedBytes',
    flag: '--max-loaded-bytes <n>',
    env: 'CLIPSERVE_MAX_LOADED_BYTES',
    description:
      'most bytes of model weights (bundle files) loaded at once across versions, with the same least-recently-used unloading (0 = no byte limit)',
    defaultValue: 0,
    parse: intIn(0),
  },
  {
    key: 'finetuneNodeSelector',
    flag: '--finetune-node-selector <labels>',
    env: 'CLIPSERVE_FINETUNE_NODE_SELECTOR',
    description:
      '`full` training pods: nodeSelector, "key=value,key2=value2" (a JSON object in a config file) (default: none)',
    defaultValue: undefined,
    parse: podOption(parseNodeSelector),
  },
  {
    key: 'finetuneTolerations',
    flag: '--finetune-tolerations <list>',
    env: 'CLIPSERVE_FINETUNE_TOLERATIONS',
    description:
      '`full` training pods: tolerations, "key[=value][:Effect],…" as kubectl taint writes them, a JSON array of toleration objects, or "none" (default: the GPU resource\'s taint, operator Exists, NoSchedule)',
    defaultValue: undefined,
    parse: podOption(parseTolerations),
  },
  {
    key: 'finetuneImagePullSecrets',
    flag: '--finetune-image-pull-secrets <names>',
    env: 'CLIPSERVE_FINETUNE_IMAGE_PULL_SECRETS',
    description:
      "`full` training pods: imagePullSecrets, comma-separated Secret names in the Jobs' namespace (default: none)",
    defaultValue: undefined,
    parse: podOption(parseSecretNames),
  },
  {
    key: 'finetuneShmSize',
    flag: '--finetune-shm-size <quantity>',
    env: 'CLIPSERVE_FINETUNE_SHM_SIZE',
    description:
      '`full` training pods: size of the in-memory /dev/shm DataLoader workers pass batches through, e.g. 32Gi (default: 8Gi per GPU)',
    defaultValue: undefined,
    parse: podOption(parseQuantity),
  },
  {
    key: 'finetuneGpuResource',
    flag: '--finetune-gpu-resource <name>',
    env: 'CLIPSERVE_FINETUNE_GPU_RESOURCE',
    description: '`full` training pods: the extended resource that counts GPUs (e.g. amd.com/gpu)',
    defaultValue: 'nvidia.com/gpu',
    parse: podOption(parseResourceName),
  },
  {
    key: 'finetuneServiceAccount',
    flag: '--finetune-service-account <name>',
    env: 'CLIPSERVE_FINETUNE_SERVICE_ACCOUNT',
    description:
      "`full` training pods: their ServiceAccount (its token is never mounted) (default: the namespace's default)",
    defaultValue: undefined,
    parse: podOption(parseServiceAccount),
  },
  {
    key: 'finetuneWorkersPerGpu',
    flag: '--finetune-workers-per-gpu <n>',
    env: 'CLIPSERVE_FINETUNE_WORKERS_PER_GPU',
    description: '`full` training pods: DataLoader worker processes per GPU (open_clip_train --workers)',
    defaultValue: 4,
    parse: intIn(0, 64),
  },
  {
    key: 'httpPort',
    flag: '--http-port <n>',
    env: 'CLIPSERVE_HTTP_PORT',
    description:
      'port of the OpenAI-compatible HTTP API (POST /v1/embeddings, GET /v1/models, GET /openapi.json; see docs/http-api.md), with the same API keys, TLS files, batcher and limits as gRPC (0 = off; auto = pick a free port, logged as "http api listening")',
    defaultValue: 8080,
    parse: portOrAuto,
  },
  {
    key: 'datasetMaxBytes',
    flag: '--dataset-max-bytes <n>',
    env: 'CLIPSERVE_DATASET_MAX_BYTES',
    description: 'most bytes one dataset upload may take (for a zip: the CSV and the images it names, extracted)',
    defaultValue: 4 * 1024 * MiB,
    parse: intIn(1),
  },
  {
    key: 'datasetMaxPairs',
    flag: '--dataset-max-pairs <n>',
    env: 'CLIPSERVE_DATASET_MAX_PAIRS',
    description: 'most pairs (CSV data rows) of one dataset; longer CSVs are refused while they are read',
    defaultValue: 1_000_000,
    parse: intIn(1),
  },
  {
    key: 'datasetMaxZipEntries',
    flag: '--dataset-max-zip-entries <n>',
    env: 'CLIPSERVE_DATASET_MAX_ZIP_ENTRIES',
    description: 'most entries a zip upload may list (only the files its CSV names are extracted)',
    defaultValue: 100_000,
    parse: intIn(1),
  },
  {
    key: 'datasetMaxPerKey',
    flag: '--dataset-max-per-key <n>',
    env: 'CLIPSERVE_DATASET_MAX_PER_KEY',
    description: 'most datasets one API key keeps (without keys: the whole server); DeleteDataset frees room',
    defaultValue: 1000,
    parse: intIn(1),
  },
  {
    key: 'authReloadFailure',
    flag: '--auth-reload-failure <policy>',
    env: 'CLIPSERVE_AUTH_RELOAD_FAILURE',
    description:
      'when the API keys file cannot be re-read or parsed: keep (the last good keys stay valid) or deny (every keyed call is refused until a good reload); either way clipserve_credentials_reload_errors_total counts it',
    defaultValue: 'keep',
    parse: oneOf(['keep', 'deny'] as const),
  },
  {
    key: 'databaseUrl',
    flag: '--database-url <url>',
    env: 'CLIPSERVE_DATABASE_URL',
    description:
      'postgres://user:password@host:port/db: keep the fine-tune catalogue (datasets, jobs, events, model versions, the active version, job ownership) in PostgreSQL, shared by every replica, instead of SQLite in --data-dir (one host only). Needs --data-dir for the artifacts (a shared volume). Prefer the environment variable: a password on the command line is visible to other users (default: none, SQLite)',
    defaultValue: undefined,
    parse: databaseUrl,
  },
  {
    key: 'credentialsReloadSeconds',
    flag: '--credentials-reload-seconds <s>',
    env: 'CLIPSERVE_CREDENTIALS_RELOAD_SECONDS',
    description:
      'how often the TLS files and the API keys file are re-read, so rotated certificates and keys apply without a restart (0 = read once at start)',
    defaultValue: 30,
    parse: numberIn(0, 86_400),
  },
  {
    key: 'maxRequestPixels',
    flag: '--max-request-pixels <n>',
    env: 'CLIPSERVE_MAX_REQUEST_PIXELS',
    description:
      "per-request decode budget: most pixels one request's images may declare in all (read from their headers before any decoding)",
    defaultValue: 200_000_000,
    parse: intIn(1),
  },
  {
    key: 'imageQueuePixels',
    flag: '--image-queue-pixels <n>',
    env: 'CLIPSERVE_IMAGE_QUEUE_PIXELS',
    description:
      'most declared pixels queued for decoding, all callers together; beyond it calls fail fast with RESOURCE_EXHAUSTED (admission by cost, not by count)',
    defaultValue: 1_000_000_000,
    parse: intIn(1),
  },
  {
    key: 'imageDecodeTimeoutSeconds',
    flag: '--image-decode-timeout-seconds <s>',
    env: 'CLIPSERVE_IMAGE_DECODE_TIMEOUT_SECONDS',
    description: 'longest one image may take to decode before libvips abandons it (whole seconds; 0 = no limit)',
    defaultValue: 5,
    parse: intIn(0, 3600),
  },
  {
    key: 'textQueueChars',
    flag: '--text-queue-chars <n>',
    env: 'CLIPSERVE_TEXT_QUEUE_CHARS',
    description:
      'most text characters queued for tokenizing, all callers together; beyond it calls fail fast with RESOURCE_EXHAUSTED (tokenizer work grows with the characters, so texts are admitted by cost like images)',
    defaultValue: 16_777_216,
    parse: intIn(1),
  },
  {
    key: 'queueCallerShare',
    flag: '--queue-caller-share <f>',
    env: 'CLIPSERVE_QUEUE_CALLER_SHARE',
    description:
      'fraction (0-1] of each queue bound (items, pixels, characters) one caller (API key, or peer address without keys) may hold while it and other callers have items queued; beyond it its calls get RESOURCE_EXHAUSTED while the others keep their room. A caller with nothing queued is always admitted within the global bounds, and a lone caller may use the whole queue. 1 = no per-caller limit',
    defaultValue: 0.5,
    parse: numberIn(0.001, 1),
  },
  {
    key: 'preprocessWorkersPerCaller',
    flag: '--preprocess-workers-per-caller <n>',
    env: 'CLIPSERVE_PREPROCESS_WORKERS_PER_CALLER',
    description:
      "most preprocessing workers one caller (API key, or peer address without keys) occupies at once, so another caller's image or text starts at once instead of waiting behind a flood (default: all workers but one, at least 1)",
    defaultValue: undefined,
    parse: intIn(1, 1024),
  },
  {
    key: 'callerRate',
    flag: '--caller-rate <n>',
    env: 'CLIPSERVE_CALLER_RATE',
    description:
      'embedding calls per second one caller (API key, or peer address without keys) may start on average; beyond it its calls get RESOURCE_EXHAUSTED from their headers, before their message is read (0, the default = no rate limit: a rate that never slows a well-behaved client on a GPU, thousands of small calls a second, would not slow a flood either; set it per tenant)',
    defaultValue: 0,
    parse: numberIn(0, 1_000_000),
  },
  {
    key: 'callerBurst',
    flag: '--caller-burst <n>',
    env: 'CLIPSERVE_CALLER_BURST',
    description:
      "embedding calls one caller may start at once after an idle spell, above --caller-rate (the token bucket's size)",
    defaultValue: 100,
    parse: intIn(1, 10_000_000),
  },
  {
    key: 'callerConcurrency',
    flag: '--caller-concurrency <n>',
    env: 'CLIPSERVE_CALLER_CONCURRENCY',
    description:
      'embedding calls (a stream counts as one) one caller may have in flight at once; beyond it its calls get RESOURCE_EXHAUSTED from their headers, before their message is read (0 = no limit)',
    defaultValue: 256,
    parse: intIn(0, 1_000_000),
  },
  {
    key: 'callerInvalidRate',
    flag: '--caller-invalid-rate <n>',
    env: 'CLIPSERVE_CALLER_INVALID_RATE',
    description:
      'embedding calls answered INVALID_ARGUMENT that one caller may make per second on average; once its --caller-invalid-burst is spent, all its embedding calls get RESOURCE_EXHAUSTED from their headers until the budget refills, so a caller that keeps sending what it is told is wrong cannot keep the server busy refusing it (0 = no limit)',
    defaultValue: 10,
    parse: numberIn(0, 1_000_000),
  },
  {
    key: 'callerInvalidBurst',
    flag: '--caller-invalid-burst <n>',
    env: 'CLIPSERVE_CALLER_INVALID_BURST',
    description: 'invalid embedding calls one caller may make at once before --caller-invalid-rate applies',
    defaultValue: 100,
    parse: intIn(1, 10_000_000),
  },
  {
    key: 'finetuneThreads',
    flag: '--finetune-threads <n>',
    env: 'CLIPSERVE_FINETUNE_THREADS',
    description:
      'decode child processes and encoder threads of an in-process (adapter) fine-tune; all run at the lowest CPU priority so serving keeps the cores first',
    defaultValue: 1,
    parse: intIn(1, 1024),
  },
];

const SPEC_BY_KEY = new Map(SERVE_OPTIONS.map((s) => [s.key, s]));
const SPEC_BY_FLAG_NAME = new Map(SERVE_OPTIONS.map((s) => [flagName(s), s]));

/** "--max-batch-size <n>" → "max-batch-size". */
export function flagName(spec: OptionSpec): string {
  return spec.flag.split(/\s+/)[0].replace(/^--/, '');
}

/**
 * Parses and completes a partial configuration: values may be typed or strings (from flags or the
 * environment); unset values take their defaults; cross-option rules are checked.
 */
export function resolveServeConfig(partial: Partial<Record<keyof ServeConfig, unknown>> = {}): ServeConfig {
  const out: Record<string, unknown> = {};
  for (const spec of SERVE_OPTIONS) {
    const raw = partial[spec.key];
    out[spec.key] = raw === undefined || raw === null ? spec.defaultValue : spec.parse(raw, `--${flagName(spec)}`);
  }
  for (const key of Object.keys(partial)) {
    if (!SPEC_BY_KEY.has(key as keyof ServeConfig)) throw new ConfigError(`unknown option "${key}"`);
  }
  const config = out as unknown as ServeConfig;
  if (config.cacheDir === undefined) config.cacheDir = defaultCacheRoot();
  validate(config);
  return config;
}

function validate(c: ServeConfig): void {
  if ((c.tlsCert === undefined) !== (c.tlsKey === undefined))
    throw new ConfigError('--tls-cert and --tls-key go together: give both or neither');
  if (c.tlsClientCa !== undefined && c.tlsCert === undefined)
    throw new ConfigError('--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)');
  if (c.maxItemsPerRequest > c.queueBound) {
    throw new ConfigError(
      `--max-items-per-request (${c.maxItemsPerRequest}) exceeds --queue-bound (${c.queueBound}): such requests could never be queued`,
    );
  }
  if (c.maxImagePixels > c.maxRequestPixels) {
    throw new ConfigError(
      `--max-image-pixels (${c.maxImagePixels}) exceeds --max-request-pixels (${c.maxRequestPixels}): such images could never be decoded`,
    );
  }
  if (c.maxRequestPixels > c.imageQueuePixels) {
    throw new ConfigError(
      `--max-request-pixels (${c.maxRequestPixels}) exceeds --image-queue-pixels (${c.imageQueuePixels}): such requests could never be queued`,
    );
  }
  if (c.maxTextChars > c.textQueueChars) {
    throw new ConfigError(
      `--max-text-chars (${c.maxTextChars}) exceeds --text-queue-chars (${c.textQueueChars}): such texts could never be queued`,
    );
  }
  if (c.maxImageBytes > c.maxMessageBytes) {
    throw new ConfigError(
      `--max-image-bytes (${c.maxImageBytes}) exceeds --max-message-bytes (${c.maxMessageBytes}): such images could never arrive`,
    );
  }
  const auth = c.apiKeysFile !== undefined || c.apiKeys !== undefined;
  if (!auth && (!c.authOpenHealth || !c.authOpenReflection)) {
    throw new ConfigError(
      '--auth-open-health / --auth-open-reflection false need API keys (--api-keys-file or CLIPSERVE_API_KEYS): without keys everything is open',
    );
  }
  if (c.databaseUrl !== undefined && c.dataDir === undefined)
    throw new ConfigError(
      '--database-url needs --data-dir: datasets, job work and model bundles stay files there (a volume every replica mounts)',
    );
  if (c.healthPort !== undefined && c.healthPort !== 0 && c.healthPort === c.port) {
    throw new ConfigError(`--health-port must differ from --port (both ${c.port})`);
  }
  for (const [flag, other] of [
    ['--port', c.port],
    ['--metrics-port', c.metricsPort],
    ['--health-port', c.healthPort],
  ] as const) {
    if (typeof c.httpPort === 'number' && c.httpPort !== 0 && c.httpPort === other)
      throw new ConfigError(`--http-port must differ from ${flag} (both ${other})`);
  }
}

/** Reads the environment's CLIPSERVE_* values (unset and empty variables are absent). */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<Record<keyof ServeConfig, string>> {
  const out: Partial<Record<keyof ServeConfig, string>> = {};
  for (const spec of SERVE_OPTIONS) {
    const v = env[spec.env];
    if (v !== undefined && v !== '') out[spec.key] = v;
  }
  return out;
}

/**
 * Reads a JSON config file: an object whose keys are option names, in camelCase ("maxBatchSize")
 * or as the flag spells them ("max-batch-size"). Unknown keys are errors (a typo must not be
 * silently ignored). Relative paths in it (model, TLS files, cache dir) are resolved against the
 * file's directory.
 */
export function readConfigFile(file: string): Partial<Record<keyof ServeConfig, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new ConfigError(`config file ${file} must hold a JSON object`);
  const out: Partial<Record<keyof ServeConfig, unknown>> = {};
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    const spec = SPEC_BY_KEY.get(name as keyof ServeConfig) ?? SPEC_BY_FLAG_NAME.get(name);
    if (!spec) throw new ConfigError(`config file ${file}: unknown option "${name}"`);
    out[spec.key] =
      PATH_KEYS.has(spec.key) && typeof value === 'string' && !value.startsWith('hf-hub:')
        ? path.resolve(path.dirname(file), value)
        : value;
  }
  return out;
}

const PATH_KEYS = new Set<keyof ServeConfig>([
  'model',
  'cacheDir',
  'tlsCert',
  'tlsKey',
  'tlsClientCa',
  'apiKeysFile',
  'dataDir',
]);
