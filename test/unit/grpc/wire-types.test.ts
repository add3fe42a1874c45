/**
 * The generated wire types (npm run gen:proto) describe what the loaders really hand over: for
 * messages decoded with the server's loader (grpc/proto.ts) and the SDK's (sdk/src/proto.ts), every
 * field a generated `__Output` interface requires is present and nothing undeclared is. A change
 * of either loader's options (defaults, oneofs, …) without the matching generator flags fails here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadProtos } from '../../../server/src/grpc/proto';
import { ensureSdkBuilt, SDK_DIR } from '../../helpers/sdk';

const REPO = path.resolve(__dirname, '..', '..', '..');

/** The keys of `interface <name>__Output` in a generated file: required, and all declared. */
function outputKeys(dir: string, message: string): { required: string[]; declared: string[] } {
  const text = fs.readFileSync(path.join(REPO, dir, 'clipserve', 'v1', `${message}.ts`), 'utf8');
  const body = new RegExp(`export interface ${message}__Output \\{\\n([\\s\\S]*?)\\n\\}`).exec(text);
  if (!body) throw new Error(`no ${message}__Output in ${dir}`);
  const fields = [...body[1].matchAll(/^\s*'([A-Za-z0-9_]+)'(\??):/gm)];
  return { required: fields.filter((f) => f[2] === '').map((f) => f[1]), declared: fields.map((f) => f[1]) };
}

type Method = {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
};

/** A message sent and decoded by one method of a service definition. */
function roundTrip(
  def: grpc.ServiceDefinition,
  method: string,
  side: 'request' | 'response',
  value: object,
): Record<string, unknown> {
  const m = def[method] as unknown as Method;
  const decoded =
    side === 'request'
      ? m.requestDeserialize(m.requestSerialize(value))
      : m.responseDeserialize(m.responseSerialize(value));
  return decoded as Record<string, unknown>;
}

/** [service, method, side, value sent, path to the message checked, its message name] */
const CASES: [string, string, 'request' | 'response', object, string[], string][] = [
  ['embedding', 'EmbedStream', 'request', { id: 'a', text: 't' }, [], 'EmbedStreamRequest'],
  [
    'embedding',
    'EmbedStream',
    'response',
    { id: 'a', embedding: { valuesF32le: Buffer.alloc(4) } },
    [],
    'EmbedStreamResponse',
  ],
  [
    'embedding',
    'EmbedStream',
    'response',
    { id: 'a', embedding: { valuesF32le: Buffer.alloc(4) } },
    ['embedding'],
    'Embedding',
  ],
  ['embedding', 'Rank', 'request', { queryImage: Buffer.alloc(1), candidateTexts: ['x'] }, [], 'RankRequest'],
  [
    'embedding',
    'GetModelInfo',
    'response',
    { name: 'm', limits: { maxItemsPerRequest: 3 } },
    [],
    'GetModelInfoResponse',
  ],
  [
    'embedding',
    'GetModelInfo',
    'response',
    { name: 'm', limits: { maxItemsPerRequest: 3 } },
    ['limits'],
    'ServerLimits',
  ],
  [
    'fineTune',
    'GetFineTuneJob',
    'response',
    { job: { id: 'j', hyperparameters: { epochs: 2, seed: 7 }, error: { code: 'c' } } },
    ['job'],
    'FineTuneJob',
  ],
  [
    'fineTune',
    'GetFineTuneJob',
    'response',
    { job: { id: 'j', hyperparameters: { epochs: 2, seed: 7 }, error: { code: 'c' } } },
    ['job', 'hyperparameters'],
    'Hyperparameters',
  ],
  [
    'fineTune',
    'GetFineTuneJob',
    'response',
    { job: { id: 'j', error: { code: 'c' } } },
    ['job', 'error'],
    'FineTuneError',
  ],
  [
    'fineTune',
    'UploadDataset',
    'request',
    { header: { name: 'n', format: 'DATASET_FORMAT_ZIP' } },
    [],
    'UploadDatasetRequest',
  ],
  [
    'fineTune',
    'WatchFineTuneJob',
    'response',
    { event: { sequence: 1, type: 'FINE_TUNE_EVENT_TYPE_LOG' }, state: 'FINE_TUNE_JOB_STATE_RUNNING' },
    ['event'],
    'FineTuneEvent',
  ],
  ['model', 'ListModels', 'response', { models: [{ version: 'v' }], activeVersion: 'v' }, [], 'ListModelsResponse'],
];

function check(services: Record<string, grpc.ServiceDefinition>, dir: string): void {
  for (const [service, method, side, value, at, message] of CASES) {
    let msg = roundTrip(services[service], method, side, value);
    for (const key of at) msg = msg[key] as Record<string, unknown>;
    const { required, declared } = outputKeys(dir, message);
    const present = Object.keys(msg).filter((k) => msg[k] !== undefined);
    expect({
      message,
      missing: required.filter((k) => !present.includes(k)),
      undeclared: present.filter((k) => !declared.includes(k)),
    }).toEqual({ message, missing: [], undeclared: [] });
  }
}

test('the server loader hands over what server/src/grpc/generated declares', () => {
  const p = loadProtos();
  check(
    { embedding: p.embeddingService, fineTune: p.fineTuneService, model: p.modelService },
    'server/src/grpc/generated',
  );
});

test('the SDK loader hands over what sdk/src/generated/wire declares', () => {
  ensureSdkBuilt();
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const sdkProto = require(path.join(SDK_DIR, 'dist', 'cjs', 'proto.js')) as typeof import('../../../sdk/src/proto');
  const c = sdkProto.serviceConstructors();
  check(
    { embedding: c.embedding.service, fineTune: c.fineTune.service, model: c.model.service },
    'sdk/src/generated/wire',
  );
});

test('a loader option the generated types do not follow is caught', () => {
  // defaults off: proto-loader leaves unset scalars out, which the __Output types require.
  const def = protoLoader.loadSync(['clipserve/v1/finetune.proto'], {
    includeDirs: [path.join(REPO, 'proto')],
    longs: Number,
    enums: String,
    oneofs: true,
  });
  const svc = def['clipserve.v1.FineTuneService'] as unknown as grpc.ServiceDefinition;
  expect(() => check({ fineTune: svc }, 'server/src/grpc/generated')).toThrow();
});
