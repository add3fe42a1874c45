/**
 * What `clipserve finetune …` prints: aligned text tables, and for --json each FineTuneService /
 * ModelService message as plain JSON, typed by the wire types generated from proto/
 * (grpc/generated). The commands get the SDK's public objects (Dates, lower-case states); these
 * functions turn them back into the messages' shape (enum names, Unix seconds, 0 / "" / [] for
 * unset fields, no protobufjs oneof internals) with the keys in the order protobufjs gives them
 * (repeated and map fields first, then the others by field number), so the output is what the
 * command printed when it read the messages itself.
 */
import type { Dataset, FineTuneJob, FineTuneHyperparameters, ModelList, ModelVersion } from '@clipserve/sdk';
import { jobStateName } from '../../grpc/finetune-messages';
import type { Dataset__Output } from '../../grpc/generated/clipserve/v1/Dataset';
import type { FineTuneJob__Output } from '../../grpc/generated/clipserve/v1/FineTuneJob';
import type { Hyperparameters__Output } from '../../grpc/generated/clipserve/v1/Hyperparameters';
import type { ListModelsResponse__Output } from '../../grpc/generated/clipserve/v1/ListModelsResponse';
import type { ModelVersion__Output } from '../../grpc/generated/clipserve/v1/ModelVersion';

/** A dataset as shown: its format as the message's enum name, or lower case ("zip"). */
export type DatasetJson = Omit<Dataset__Output, 'format'> & { format: string };

/** Message fields of the hyperparameters, by field number. */
const HP_ORDER: (keyof FineTuneHyperparameters & keyof Hyperparameters__Output)[] = [
  'learningRate',
  'lrSchedule',
  'warmupSteps',
  'batchSize',
  'epochs',
  'precision',
  'colorJitter',
  'colorJitterProb',
  'grayscaleProb',
  'gradCheckpointing',
  'validationSplit',
  'seed',
  'gpusPerNode',
  'nodes',
  'image',
  'namespace',
  'weightDecay',
];

/** Unix seconds of a time the SDK gives as a Date (0: unset). */
const seconds = (d: Date | null): number => (d ? d.getTime() / 1000 : 0);

const when = (d: Date | null): string => (d && d.getTime() ? d.toISOString().replace('.000Z', 'Z') : '-');

function hyperparametersJson(hp: FineTuneHyperparameters): Hyperparameters__Output {
  const out: Hyperparameters__Output = { colorJitter: [...(hp.colorJitter ?? [])] };
  for (const k of HP_ORDER) if (k !== 'colorJitter' && hp[k] !== undefined) Object.assign(out, { [k]: hp[k] });
  return out;
}

export function jobJson(j: FineTuneJob): FineTuneJob__Output {
  return {
    metricsBefore: { ...j.metricsBefore },
    metricsAfter: { ...j.metricsAfter },
    id: j.id,
    method: j.method,
    baseModel: j.baseModel,
    trainingFile: j.trainingFile,
    validationFile: j.validationFile,
    hyperparameters: hyperparametersJson(j.hyperparameters),
    // The SDK's states are the store's (the server maps them to the enum the same way).
    state: jobStateName(j.state),
    fineTunedModel: j.fineTunedModel,
    createdAt: seconds(j.createdAt),
    startedAt: seconds(j.startedAt),
    finishedAt: seconds(j.finishedAt),
    error: j.error ? { rows: [...j.error.rows], code: j.error.code, message: j.error.message } : null,
    step: j.step,
    totalSteps: j.totalSteps,
    suffix: j.suffix,
  };
}

/** `enumName`: DATASET_FORMAT_ZIP as on the wire (delete-dataset); otherwise "zip" (upload, datasets). */
export function datasetJson(d: Dataset, format: 'enumName' | 'lowerCase'): DatasetJson {
  return {
    id: d.id,
    name: d.name,
    format: format === 'enumName' ? `DATASET_FORMAT_${d.format.toUpperCase()}` : d.format,
    numPairs: d.numPairs,
    bytes: d.bytes,
    createdAt: seconds(d.createdAt),
  };
}

function modelVersionJson(m: ModelVersion): ModelVersion__Output {
  return {
    metrics: { ...m.metrics },
    version: m.version,
    name: m.name,
    parentVersion: m.parentVersion,
    fineTuneJobId: m.fineTuneJobId,
    active: m.active,
    createdAt: seconds(m.createdAt),
    loaded: m.loaded,
  };
}

export function modelListJson(l: ModelList): ListModelsResponse__Output {
  return {
    models: l.models.map(modelVersionJson),
    loadedVersions: [...l.loadedVersions],
    activeVersion: l.activeVersion,
  };
}

export function activateJson(
  model: ModelVersion,
  previousVersion: string,
): { model: ModelVersion__Output; previousVersion: string } {
  return { model: modelVersionJson(model), previousVersion };
}

/** A plain aligned text table. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (cell ?? '').padEnd(widths[c]))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

export function jobTable(jobs: FineTuneJob[]): string {
  return formatTable(
    ['ID', 'STATE', 'METHOD', 'BASE MODEL', 'FINE-TUNED MODEL', 'STEP', 'CREATED'],
    jobs.map((j) => [
      j.id,
      j.state,
      j.method,
      j.baseModel,
      j.fineTunedModel || '-',
      `${j.step}/${j.totalSteps}`,
      when(j.createdAt),
    ]),
  );
}

const METRIC_ORDER = ['R@1', 'R@5', 'R@10', 'mean_rank', 'median_rank'];

/** The model card's metrics before and after, one row per metric. */
export function metricsTable(before: Record<string, number>, after: Record<string, number>): string {
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort((a, b) => {
    const dir = (k: string) => (k.startsWith('image_to_text') ? 0 : 1);
    const rank = (k: string) => METRIC_ORDER.findIndex((m) => k.endsWith(m));
    return dir(a) - dir(b) || rank(a) - rank(b) || a.localeCompare(b);
  });
  const fmt = (k: string, v: number | undefined) =>
    v === undefined ? '-' : k.includes('R@') ? `${(100 * v).toFixed(2)}%` : v.toFixed(2);
  return formatTable(
    ['METRIC', 'BEFORE', 'AFTER'],
    keys.map((k) => [k, fmt(k, before[k]), fmt(k, after[k])]),
  );
}

export function jobDetails(j: FineTuneJob): string {
  let out = formatTable(
    ['FIELD', 'VALUE'],
    [
      ['id', j.id],
      ['state', j.state],
      ['method', j.method],
      ['base model', j.baseModel],
      ['training file', j.trainingFile],
      ['validation file', j.validationFile || '-'],
      ['fine-tuned model', j.fineTunedModel || '-'],
      ['steps', `${j.step}/${j.totalSteps}`],
      ['created', when(j.createdAt)],
      ['started', when(j.startedAt)],
      ['finished', when(j.finishedAt)],
      ...(j.error ? [['error', `${j.error.code}: ${j.error.message}`]] : []),
    ],
  );
  if (Object.keys(j.metricsBefore).length || Object.keys(j.metricsAfter).length)
    out += '\n' + metricsTable(j.metricsBefore, j.metricsAfter);
  return out;
}

export function datasetTable(datasets: DatasetJson[]): string {
  const secs = (s: number) => when(s ? new Date(s * 1000) : null);
  return formatTable(
    ['DATASET', 'NAME', 'FORMAT', 'PAIRS', 'BYTES', 'CREATED'],
    datasets.map((d) => [d.id, d.name, d.format, String(d.numPairs), String(d.bytes), secs(d.createdAt)]),
  );
}

export function modelTable(l: ModelList): string {
  return formatTable(
    ['VERSION', 'ACTIVE', 'LOADED', 'NAME', 'PARENT', 'JOB', 'CREATED', 'T2I R@1'],
    l.models.map((m) => [
      m.version,
      m.active ? '*' : '',
      m.loaded ? 'yes' : '',
      m.name,
      m.parentVersion || '-',
      m.fineTuneJobId || '-',
      when(m.createdAt),
      m.metrics['text_to_image_R@1'] !== undefined ? `${(100 * m.metrics['text_to_image_R@1']).toFixed(2)}%` : '-',
    ]),
  );
}
