import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BatcherObserver, Modality, RejectReason } from '../batching/types';
import {
  BATCH_SIZE_BUCKETS,
  INFERENCE_SECONDS_BUCKETS,
  PREPROCESS_SECONDS_BUCKETS,
  QUEUE_WAIT_SECONDS_BUCKETS,
} from './buckets';

export type { Modality, RejectReason };

/** Every value of the batcher's Modality and RejectReason, for the series created up front. */
export const MODALITIES = ['text', 'image'] as const satisfies readonly Modality[];
export const REJECT_REASONS = [
  'bad_image',
  'too_large',
  'overload',
  'key_share',
  'caller_limit',
  'deadline',
  'cancelled',
] as const satisfies readonly RejectReason[];

/** What `clipserve_model_info` reports about the loaded model. */
export interface ModelInfoLabels {
  name: string;
  version: string;
  /** onnxruntime execution provider, e.g. "cpu". */
  provider: string;
  /** True for the bundled tiny demo model, which produces meaningless embeddings. */
  demo: boolean;
  /** The bundle's precision ("fp32", "fp16", "int8"); the label is left out when not given. */
  precision?: string;
}

/** Fine-tune job counts by state, e.g. `{ queued: 1, running: 2, succeeded: 10, failed: 0 }`. */
export type FineTuneJobCounts = Readonly<Record<string, number>>;
export type FineTuneJobCountsSource = () => FineTuneJobCounts | Promise<FineTuneJobCounts>;

/** A metric or value that cannot be recorded; thrown instead of exporting a wrong number. */
export class MetricsValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsValueError';
  }
}

const LABEL_VALUE = /^[A-Za-z0-9_.:-]{1,64}$/;

function checkModality(modality: string): asserts modality is Modality {
  if (!(MODALITIES as readonly string[]).includes(modality)) {
    throw new MetricsValueError(`unknown modality "${modality}" (expected ${MODALITIES.join(' or ')})`);
  }
}

function checkSeconds(what: string, seconds: number): void {
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new MetricsValueError(`${what} must be a finite number of seconds >= 0, got ${seconds}`);
  }
}

function checkCount(what: string, count: number): void {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new MetricsValueError(`${what} must be a non-negative integer, got ${count}`);
  }
}

function checkJobCounts(counts: FineTuneJobCounts): void {
  for (const [state, count] of Object.entries(counts)) {
    if (!LABEL_VALUE.test(state)) throw new MetricsValueError(`invalid fine-tune job state "${state}"`);
    checkCount(`fine-tune job count for state "${state}"`, count);
  }
}

/**
 * clipserve's own metrics (prefix `clipserve_`). The object is the batcher's observer
 * (`queueDepth`, `batchRun`, `itemRejected`, `preprocessed`, `embedded`) and also carries the
 * model-level setters. Every label combination is created at zero up front, so rates and ratios
 * exist from the first scrape and a missing series always means a missing process.
 */
export class ServiceMetrics implements BatcherObserver {
  private readonly itemsEmbedded: Counter<'modality'>;
  private readonly batchSize: Histogram<'modality'>;
  private readonly queueDepthGauge: Gauge<'modality'>;
  private readonly queueCallersGauge: Gauge<'modality'>;
  private readonly queueCapacity: Gauge<'modality'>;
  private readonly queueWait: Histogram<'modality'>;
  private readonly preprocessSeconds: Histogram<'modality'>;
  private readonly inferenceSeconds: Histogram<'modality'>;
  private readonly rejected: Counter<'modality' | 'reason'>;
  private readonly modelInfo: Gauge<keyof ModelInfoLabels>;
  private readonly modelLoadSeconds: Gauge;
  private readonly fineTuneJobs: Gauge<'state'>;
  private readonly versionItemsEmbedded: Counter<'version' | 'modality'>;
  private readonly versionsLoaded: Gauge<'version' | 'active'>;
  /** Queue depth of each loaded version's batchers: the modality gauge reports their sum. */
  private readonly depthByVersion = new Map<string, Record<Modality, number>>();
  private readonly callersByVersion = new Map<string, Record<Modality, number>>();
  private fineTuneSource: FineTuneJobCountsSource | undefined;

  constructor(registry: Registry) {
    const registers = [registry];
    this.itemsEmbedded = new Counter({
      name: 'clipserve_items_embedded_total',
      help: 'Items (texts or images) embedded successfully, by modality.',
      labelNames: ['modality'],
      registers,
    });
    this.batchSize = new Histogram({
      name: 'clipserve_batch_size',
      help: 'Number of items in each model batch, by modality.',
      labelNames: ['modality'],
      buckets: [...BATCH_SIZE_BUCKETS],
      registers,
    });
    this.queueDepthGauge = new Gauge({
      name: 'clipserve_queue_depth',
      help: 'Items waiting in the batching queue, by modality.',
      labelNames: ['modality'],
      registers,
    });
    this.queueCallersGauge = new Gauge({
      name: 'clipserve_queue_callers',
      help: 'Distinct callers (API keys, or peer addresses without keys) with items in the batching queue, by modality; their items are scheduled in turns. Refusals for exceeding one caller\'s share are clipserve_rejected_items_total{reason="key_share"}.',
      labelNames: ['modality'],
      registers,
    });
    this.queueCapacity = new Gauge({
      name: 'clipserve_queue_capacity',
      help: 'Most items the batching queue admits, by modality; beyond it calls fail with RESOURCE_EXHAUSTED.',
      labelNames: ['modality'],
      registers,
    });
    this.queueWait = new Histogram({
      name: 'clipserve_queue_wait_seconds',
      help: 'Time each item waited in the batching queue before its batch ran, by modality.',
      labelNames: ['modality'],
      buckets: [...QUEUE_WAIT_SECONDS_BUCKETS],
      registers,
    });
    this.preprocessSeconds = new Histogram({
      name: 'clipserve_preprocess_seconds',
      help: 'Per-item preprocessing time (tokenization or image decode/resize/normalize), by modality.',
      labelNames: ['modality'],
      buckets: [...PREPROCESS_SECONDS_BUCKETS],
      registers,
    });
    this.inferenceSeconds = new Histogram({
      name: 'clipserve_inference_seconds',
      help: 'Model forward-pass time per batch, by modality.',
      labelNames: ['modality'],
      buckets: [...INFERENCE_SECONDS_BUCKETS],
      registers,
    });
    this.rejected = new Counter({
      name: 'clipserve_rejected_items_total',
      help: 'Items rejected instead of embedded, by modality and reason. Calls refused from their headers, before their items were read (reason caller_limit, or key_share), count one each.',
      labelNames: ['modality', 'reason'],
      registers,
    });
    this.modelInfo = new Gauge({
      name: 'clipserve_model_info',
      help: 'The loaded model; always 1, the labels carry the information.',
      labelNames: ['name', 'version', 'provider', 'demo', 'precision'],
      registers,
    });
    this.modelLoadSeconds = new Gauge({
      name: 'clipserve_model_load_seconds',
      help: 'Seconds it took to load (and warm up) the current model.',
      registers,
    });
    // Scrape-time values: a registered source is asked at each scrape, so the numbers are as
    // fresh as the job store; with neither a source nor pushed counts no series is exported.
    const fineTuneJobs: Gauge<'state'> = new Gauge({
      name: 'clipserve_finetune_jobs',
      help: 'Fine-tune jobs by state.',
      labelNames: ['state'],
      registers,
      collect: async () => {
        if (!this.fineTuneSource) return;
        const counts = await this.fineTuneSource();
        checkJobCounts(counts);
        fineTuneJobs.reset();
        for (const [state, count] of Object.entries(counts)) fineTuneJobs.set({ state }, count);
      },
    });
    this.fineTuneJobs = fineTuneJobs;
    this.versionItemsEmbedded = new Counter({
      name: 'clipserve_version_items_embedded_total',
      help: 'Items (texts or images) embedded successfully, by model version and modality.',
      labelNames: ['version', 'modality'],
      registers,
    });
    this.versionsLoaded = new Gauge({
      name: 'clipserve_model_version_loaded',
      help: 'The model versions in memory; always 1, active="true" for the one unpinned calls get.',
      labelNames: ['version', 'active'],
      registers,
    });

    for (const modality of MODALITIES) {
      this.itemsEmbedded.inc({ modality }, 0);
      this.batchSize.zero({ modality });
      this.queueDepthGauge.set({ modality }, 0);
      this.queueCallersGauge.set({ modality }, 0);
      this.queueWait.zero({ modality });
      this.preprocessSeconds.zero({ modality });
      this.inferenceSeconds.zero({ modality });
      for (const reason of REJECT_REASONS) this.rejected.inc({ modality, reason }, 0);
    }
  }

  // ---- BatcherObserver -------------------------------------------------------------------

  queueDepth(modality: Modality, depth: number): void {
    checkModality(modality);
    checkCount('queue depth', depth);
    this.queueDepthGauge.set({ modality }, depth);
  }

  batchRun(modality: Modality, size: number, queueWaitSeconds: readonly number[], inferenceSeconds: number): void {
    checkModality(modality);
    checkCount('batch size', size);
    checkSeconds('inference time', inferenceSeconds);
    for (const wait of queueWaitSeconds) checkSeconds('queue wait', wait);
    this.batchSize.observe({ modality }, size);
    for (const wait of queueWaitSeconds) this.queueWait.observe({ modality }, wait);
    this.inferenceSeconds.observe({ modality }, inferenceSeconds);
  }

  queueCallers(modality: Modality, callers: number): void {
    checkModality(modality);
    checkCount('queue callers', callers);
    this.queueCallersGauge.set({ modality }, callers);
  }

  itemRejected(modality: Modality, reason: RejectReason): void {
    checkModality(modality);
    if (!(REJECT_REASONS as readonly string[]).includes(reason)) {
      throw new MetricsValueError(`unknown reject reason "${reason}" (expected one of ${REJECT_REASONS.join(', ')})`);
    }
    this.rejected.inc({ modality, reason });
  }

  preprocessed(modality: Modality, seconds: number): void {
    checkModality(modality);
    checkSeconds('preprocessing time', seconds);
    this.preprocessSeconds.observe({ modality }, seconds);
  }

  embedded(modality: Modality, count: number): void {
    checkModality(modality);
    checkCount('embedded item count', count);
    this.itemsEmbedded.inc({ modality }, count);
  }

  /** The queue bound (`--queue-bound`), so dashboards and alerts can relate depth to capacity. */
  setQueueCapacity(modality: Modality, capacity: number): void {
    checkModality(modality);
    checkCount('queue capacity', capacity);
    this.queueCapacity.set({ modality }, capacity);
  }

  /**
   * The observer of one model version's batchers: the modality series as above (queue depth summed
   * over the loaded versions) plus the version-labelled ones.
   */
  forVersion(version: string): BatcherObserver {
    if (typeof version !== 'string' || version === '')
      throw new MetricsValueError('model version must be a non-empty string');
    for (const modality of MODALITIES) this.versionItemsEmbedded.inc({ version, modality }, 0);
    return {
      queueDepth: (modality, depth) => {
        checkModality(modality);
        checkCount('queue depth', depth);
        const depths = this.depthByVersion.get(version) ?? { text: 0, image: 0 };
        depths[modality] = depth;
        if (depth === 0 && depths.text === 0 && depths.image === 0) this.depthByVersion.delete(version);
        else this.depthByVersion.set(version, depths);
        let total = 0;
        for (const d of this.depthByVersion.values()) total += d[modality];
        this.queueDepthGauge.set({ modality }, total);
      },
      queueCallers: (modality, callers) => {
        checkModality(modality);
        checkCount('queue callers', callers);
        const counts = this.callersByVersion.get(version) ?? { text: 0, image: 0 };
        counts[modality] = callers;
        if (counts.text === 0 && counts.image === 0) this.callersByVersion.delete(version);
        else this.callersByVersion.set(version, counts);
        let total = 0;
        for (const c of this.callersByVersion.values()) total += c[modality];
        this.queueCallersGauge.set({ modality }, total);
      },
      batchRun: (modality, size, waits, seconds) => this.batchRun(modality, size, waits, seconds),
      itemRejected: (modality, reason) => this.itemRejected(modality, reason),
      preprocessed: (modality, seconds) => this.preprocessed(modality, seconds),
      embedded: (modality, count) => {
        this.embedded(modality, count);
        this.versionItemsEmbedded.inc({ version, modality }, count);
      },
    };
  }

  /** Replaces the loaded-versions series. */
  setLoadedVersions(versions: readonly { version: string; active: boolean }[]): void {
    this.versionsLoaded.reset();
    for (const v of versions) this.versionsLoaded.set({ version: v.version, active: String(v.active) }, 1);
  }

  // ---- model and jobs --------------------------------------------------------------------

  /** Replaces the model info series (a reload must not leave the old model's series behind). */
  setModelInfo(info: ModelInfoLabels): void {
    for (const key of ['name', 'version', 'provider'] as const) {
      if (typeof info[key] !== 'string') throw new MetricsValueError(`model info "${key}" must be a string`);
    }
    if (info.name.length === 0) throw new MetricsValueError('model info "name" must not be empty');
    if (info.precision !== undefined && !LABEL_VALUE.test(info.precision))
      throw new MetricsValueError(`invalid model precision "${info.precision}"`);
    this.modelInfo.reset();
    this.modelInfo.set(
      {
        name: info.name,
        version: info.version,
        provider: info.provider,
        demo: String(Boolean(info.demo)),
        ...(info.precision ? { precision: info.precision } : {}),
      },
      1,
    );
  }

  setModelLoadSeconds(seconds: number): void {
    checkSeconds('model load time', seconds);
    this.modelLoadSeconds.set(seconds);
  }

  /** Publishes the current job counts; states missing from `counts` disappear from the scrape. */
  setFineTuneJobCounts(counts: FineTuneJobCounts): void {
    checkJobCounts(counts);
    this.fineTuneSource = undefined;
    this.fineTuneJobs.reset();
    for (const [state, count] of Object.entries(counts)) this.fineTuneJobs.set({ state }, count);
  }

  /** Alternative to pushing counts: `source` is asked for the counts at every scrape. */
  setFineTuneJobCountsSource(source: FineTuneJobCountsSource): void {
    this.fineTuneSource = source;
  }
}
