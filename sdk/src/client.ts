/** ClipClient: the SDK's entry point. */
import * as grpc from '@grpc/grpc-js';
import { batchesOf, runBounded, type Batch } from './batching.js';
import { abortedError, resolveDeadline, unaryCall } from './call.js';
import {
  channelCredentials,
  channelOptions,
  DEFAULT_MAX_MESSAGE_BYTES,
  parseTarget,
  type ChannelConfig,
} from './channel.js';
import { ClipServeError, invalidArgument, Status } from './errors.js';
import { FineTunes, Models } from './fine-tunes.js';
import { checkText, classifyItem, imageBytes } from './inputs.js';
import { serviceConstructors } from './proto.js';
import { DEFAULT_MAX_IN_FLIGHT, embedStream, modalityOf } from './stream.js';
import { decodeEmbedding } from './vectors.js';
import type {
  CallOptions,
  ClassifyOptions,
  EmbedItem,
  EmbedOptions,
  HealthStatus,
  ImageInput,
  LabelScore,
  ModelInfo,
  VersionOptions,
  RankCandidates,
  RankedCandidate,
  RankOptions,
  RankQuery,
  ServerLimits,
  SimilarityResult,
  StreamItem,
  StreamOptions,
  StreamResult,
} from './types.js';
import type * as wire from './wire.js';

export interface ClipClientOptions extends ChannelConfig {
  /** Sent on every call as `authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Extra metadata (headers) sent on every call. */
  metadata?: Record<string, string>;
  /** Per-request timeout when a call gives neither `timeoutMs` nor `deadline`. Default 60 000; 0 disables. */
  defaultTimeoutMs?: number;
  /** Items per request for the batch helpers (never above the server's advertised limit); default: that limit, else 64. */
  maxItemsPerRequest?: number;
  /** Requests in flight at once for the batch helpers. Default 4. */
  concurrency?: number;
  /**
   * Pin every embedding call to a model version (a call's own `modelVersion` option wins). The
   * server serves any version it knows, loading it on demand; NOT_FOUND for one it does not know.
   */
  modelVersion?: string;
}

/** Used when the server does not advertise a limit (0 in ServerLimits). */
const FALLBACK_MAX_ITEMS = 64;
const NO_ADVERTISED_LIMITS: ServerLimits = {
  maxItemsPerRequest: 0,
  maxImageBytes: 0,
  maxImagePixels: 0,
  maxMessageBytes: 0,
  maxBatchSize: 0,
  maxTextChars: 0,
};
/** Room left in each request for fields other than the items. */
const REQUEST_HEADROOM_BYTES = 4096;

type Job = { kind: 'text'; batch: Batch<string> } | { kind: 'image'; batch: Batch<Buffer> };

export class ClipClient {
  private readonly client: grpc.Client;
  private readonly healthClient: grpc.Client;
  private readonly apiKey: string | undefined;
  private readonly extraMetadata: Record<string, string>;
  private readonly defaultTimeoutMs: number;
  private readonly maxItemsPerRequest: number | undefined;
  private readonly concurrency: number;
  private readonly modelVersion: string;
  private readonly maxSendBytes: number;
  private limits: Promise<ServerLimits> | undefined;
  /** Datasets and fine-tune jobs (FineTuneService). */
  readonly fineTunes: FineTunes;
  /** Model versions and activation (ModelService). */
  readonly models: Models;

  constructor(options: ClipClientOptions) {
    if (options === null || typeof options !== 'object')
      throw new TypeError('new ClipClient({ address, ... }): options are required');
    const target = parseTarget(String(options.address ?? ''));
    const credentials = channelCredentials(options.tls);
    const { embedding, health, fineTune, model } = serviceConstructors();
    this.client = new embedding(target, credentials, channelOptions(options));
    this.healthClient = new health(target, credentials, { channelOverride: this.client.getChannel() });
    if (
      options.apiKey !== undefined &&
      (typeof options.apiKey !== 'string' || options.apiKey === '' || /[\r\n]/.test(options.apiKey))
    ) {
      throw new TypeError('ClipClient: apiKey must be a non-empty single-line string');
    }
    this.apiKey = options.apiKey;
    this.extraMetadata = { ...options.metadata };
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 60_000;
    this.maxItemsPerRequest = positiveInt(options.maxItemsPerRequest, 'maxItemsPerRequest');
    this.concurrency = positiveInt(options.concurrency, 'concurrency') ?? 4;
    this.modelVersion = options.modelVersion ?? '';
    this.maxSendBytes = options.maxSendMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    // One channel for every service: the same connections, credentials, balancing and retry policy.
    const shared = { channelOverride: this.client.getChannel() };
    const context = (client: grpc.Client) => ({
      client,
      metadata: () => this.metadata(),
      defaultTimeoutMs: this.defaultTimeoutMs,
      maxSendBytes: this.maxSendBytes,
      retry: options.retry,
    });
    this.fineTunes = new FineTunes(context(new fineTune(target, credentials, shared)));
    this.models = new Models(context(new model(target, credentials, shared)));
  }

  /** Closes the channel; calls in flight fail with CANCELLED/UNAVAILABLE. */
  close(): void {
    this.client.close();
  }

  /**
   * Resolves once the channel is connected (or rejects at the deadline). Useful at start-up; the
   * other methods do not need it, as they wait for a connection themselves.
   */
  async waitForReady(opts: CallOptions = {}): Promise<void> {
    const { signal } = opts;
    if (signal?.aborted) throw abortedError(signal);
    const deadline = resolveDeadline(opts, this.defaultTimeoutMs) ?? new Date(Date.now() + 60_000);
    await new Promise<void>((resolve, reject) => {
      // grpc-js cannot cancel a waitForReady; an abort settles the promise and the wait ends unobserved.
      const onAbort = (): void => reject(abortedError(signal!));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.client.waitForReady(deadline, (err) => {
        signal?.removeEventListener('abort', onAbort);
        if (err)
          reject(
            new ClipServeError({
              code: Status.DEADLINE_EXCEEDED,
              details: `not connected by the deadline: ${err.message}`,
              cause: err,
            }),
          );
        else resolve();
      });
    });
  }

  // ---------------------------------------------------------------- embeddings

  /** One embedding per text, in input order. Large inputs are split into several requests. */
  async embedTexts(texts: string[], opts: EmbedOptions = {}): Promise<Float32Array[]> {
    if (!Array.isArray(texts)) throw invalidArgument('embedTexts expects an array of strings');
    texts.forEach((t, i) => checkText(t, i));
    return this.embedParts(
      texts,
      [],
      texts.length,
      (i) => i,
      () => 0,
      opts,
    );
  }

  /** One embedding per image (Buffer, Uint8Array or file path), in input order. */
  async embedImages(images: ImageInput[], opts: EmbedOptions = {}): Promise<Float32Array[]> {
    if (!Array.isArray(images)) throw invalidArgument('embedImages expects an array of images');
    return this.embedParts(
      [],
      images,
      images.length,
      () => 0,
      (i) => i,
      opts,
    );
  }

  /** Texts and images mixed; one embedding per item, in input order. */
  async embed(items: EmbedItem[], opts: EmbedOptions = {}): Promise<Float32Array[]> {
    if (!Array.isArray(items)) throw invalidArgument('embed expects an array of items');
    const texts: string[] = [];
    const images: ImageInput[] = [];
    const textPos: number[] = [];
    const imagePos: number[] = [];
    items.forEach((item, i) => {
      const c = classifyItem(item, i);
      if (c.kind === 'text') {
        texts.push(c.text);
        textPos.push(i);
      } else {
        images.push(c.image);
        imagePos.push(i);
      }
    });
    return this.embedParts(
      texts,
      images,
      items.length,
      (i) => textPos[i],
      (i) => imagePos[i],
      opts,
    );
  }

  /**
   * Streams items through one EmbedStream call. Results arrive in completion order, each with its
   * item's id; a failed item yields `{ id, error }` and the stream goes on. Breaking out of the
   * loop cancels the call.
   */
  embedStream(
    source: AsyncIterable<StreamItem> | Iterable<StreamItem>,
    opts: StreamOptions = {},
  ): AsyncIterable<StreamResult> {
    const deadline = resolveDeadline(opts, undefined);
    return embedStream(source, {
      open: () =>
        (
          this.client as unknown as {
            EmbedStream(
              md: grpc.Metadata,
              o: grpc.CallOptions,
            ): grpc.ClientDuplexStream<wire.EmbedStreamRequest, wire.EmbedStreamResponse>;
          }
        ).EmbedStream(this.metadata(), deadline ? { deadline } : {}),
      raw: opts.raw ?? false,
      modelVersion: this.versionFor(opts),
      maxInFlight: opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT,
      signal: opts.signal,
    });
  }

  // ---------------------------------------------------------------- scoring

  /** CLIP's model(image, text): scaled cosine logits both ways and per-image softmax over the texts. */
  async similarity(
    input: { images: ImageInput[]; texts: string[] },
    opts: CallOptions & VersionOptions = {},
  ): Promise<SimilarityResult> {
    const images = await this.loadImages(input?.images, 'images');
    const texts = checkTexts(input?.texts, 'texts');
    const res = await this.unary<wire.SimilarityRequest, wire.SimilarityResponse>(
      'Similarity',
      { images, texts, modelVersion: this.versionFor(opts) },
      opts,
    );
    return {
      logitsPerImage: res.logitsPerImage.map((r) => r.values),
      logitsPerText: res.logitsPerText.map((r) => r.values),
      probs: res.probs.map((r) => r.values),
      textTruncated: res.textTruncated,
      logitScale: res.logitScale,
      modelVersion: res.modelVersion,
    };
  }

  /** Ranks candidate texts and/or images against one query, best first. */
  async rank(query: RankQuery, candidates: RankCandidates, opts: RankOptions = {}): Promise<RankedCandidate[]> {
    const request: wire.RankRequest = {
      candidateTexts: checkTexts(candidates?.texts ?? [], 'candidates.texts'),
      candidateImages: await this.loadImages(candidates?.images ?? [], 'candidates.images'),
      topK: nonNegativeInt(opts.topK, 'topK'),
      modelVersion: this.versionFor(opts),
    };
    if (query && typeof query === 'object' && 'text' in query && !('image' in query))
      request.queryText = checkText(query.text);
    else if (query && typeof query === 'object' && 'image' in query && !('text' in query))
      request.queryImage = await imageBytes(query.image);
    else throw invalidArgument('rank: the query must be { text } or { image }');
    const res = await this.unary<wire.RankRequest, wire.RankResponse>('Rank', request, opts);
    return res.results.map((r) => ({
      modality: modalityOf(r.modality) ?? 'text',
      index: r.index,
      score: r.score,
      logit: r.logit,
      probability: r.probability,
    }));
  }

  /** Zero-shot classification: per image, the labels sorted by probability. */
  async classify(images: ImageInput[], labels: string[], opts: ClassifyOptions = {}): Promise<LabelScore[][]> {
    const request: wire.ClassifyRequest = {
      images: await this.loadImages(images, 'images'),
      labels: checkTexts(labels, 'labels'),
      templates: checkTexts(opts.templates ?? [], 'templates'),
      topK: nonNegativeInt(opts.topK, 'topK'),
      modelVersion: this.versionFor(opts),
    };
    const res = await this.unary<wire.ClassifyRequest, wire.ClassifyResponse>('Classify', request, opts);
    return res.classifications.map((c) =>
      c.labels.map((l) => ({ label: l.label, index: l.index, probability: l.probability, logit: l.logit })),
    );
  }

  // ---------------------------------------------------------------- service info

  /** The active model (or `opts.modelVersion`, which the server loads if needed), the loaded versions and the limits. */
  async modelInfo(opts: CallOptions & VersionOptions = {}): Promise<ModelInfo> {
    const res = await this.unary<wire.GetModelInfoRequest, wire.GetModelInfoResponse>(
      'GetModelInfo',
      { modelVersion: opts.modelVersion ?? '' },
      opts,
    );
    const l = res.limits;
    return {
      name: res.name,
      version: res.version,
      embedDim: res.embedDim,
      imageSize: res.imageSize,
      contextLength: res.contextLength,
      logitScale: res.logitScale,
      provider: res.provider,
      demo: res.demo,
      precision: res.precision,
      limits: {
        maxItemsPerRequest: l?.maxItemsPerRequest ?? 0,
        maxImageBytes: l?.maxImageBytes ?? 0,
        maxImagePixels: l?.maxImagePixels ?? 0,
        maxMessageBytes: l?.maxMessageBytes ?? 0,
        maxBatchSize: l?.maxBatchSize ?? 0,
        maxTextChars: l?.maxTextChars ?? 0,
      },
      activeVersion: res.activeVersion ?? '',
      loadedVersions: [...(res.loadedVersions ?? [])],
    };
  }

  /** The version a call pins: its own option, else the client's ("" = the server's active version). */
  private versionFor(opts: VersionOptions): string {
    const v = opts.modelVersion ?? this.modelVersion;
    if (typeof v !== 'string') throw invalidArgument('modelVersion must be a string');
    return v;
  }

  /** grpc.health.v1 Check; `service` "" (default) asks about the server as a whole. */
  async health(opts: CallOptions & { service?: string } = {}): Promise<HealthStatus> {
    const res = await unaryCall<wire.HealthCheckRequest, wire.HealthCheckResponse>(
      this.healthClient,
      'Check',
      { service: opts.service ?? '' },
      this.metadata(),
      resolveDeadline(opts, this.defaultTimeoutMs),
      opts.signal,
    );
    return res.status;
  }

  // ---------------------------------------------------------------- internals

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(this.extraMetadata)) md.set(k, v);
    if (this.apiKey !== undefined) md.set('authorization', `Bearer ${this.apiKey}`);
    return md;
  }

  private unary<Req, Res>(
    method: string,
    request: Req,
    opts: CallOptions,
    toInputIndex?: (i: number) => number | undefined,
    signal?: AbortSignal,
    deadline?: Date,
  ): Promise<Res> {
    return unaryCall<Req, Res>(
      this.client,
      method,
      request,
      this.metadata(),
      deadline ?? resolveDeadline(opts, this.defaultTimeoutMs),
      signal ?? opts.signal,
      toInputIndex,
    );
  }

  private async loadImages(images: ImageInput[] | undefined, what: string): Promise<Buffer[]> {
    if (!Array.isArray(images)) throw invalidArgument(`${what} must be an array of images`);
    return Promise.all(images.map((img, i) => imageBytes(img, i)));
  }

  /**
   * The server's limits, asked once per client (a failed attempt is not cached). A server without
   * GetModelInfo (UNIMPLEMENTED) advertises nothing: all limits 0, the client's settings apply.
   */
  private serverLimits(opts: CallOptions, deadline: Date | undefined): Promise<ServerLimits> {
    if (!this.limits) {
      this.limits = this.modelInfo({
        ...opts,
        modelVersion: '',
        deadline: deadline ?? resolveDeadline(opts, this.defaultTimeoutMs),
      }).then(
        (info) => info.limits,
        (err: unknown) => {
          if (err instanceof ClipServeError && err.code === Status.UNIMPLEMENTED) return NO_ADVERTISED_LIMITS;
          throw err;
        },
      );
      this.limits.catch(() => (this.limits = undefined));
    }
    return this.limits;
  }

  /**
   * Embeds `texts` and `images` in batches the server accepts, with bounded concurrency, writing
   * each vector at its caller position (textPos / imagePos map a list index to it).
   */
  private async embedParts(
    texts: string[],
    images: ImageInput[],
    total: number,
    textPos: (i: number) => number,
    imagePos: (i: number) => number,
    opts: EmbedOptions,
  ): Promise<Float32Array[]> {
    const out = new Array<Float32Array>(total);
    if (total === 0) return out;
    // An explicit timeout/deadline bounds the whole operation; otherwise each request gets the default.
    const opDeadline = resolveDeadline(opts, undefined);
    const configuredMax = positiveInt(opts.maxItemsPerRequest, 'maxItemsPerRequest') ?? this.maxItemsPerRequest;
    const limits = await this.serverLimits(opts, opDeadline);
    const maxItems = Math.min(
      configuredMax ?? (limits.maxItemsPerRequest || FALLBACK_MAX_ITEMS),
      limits.maxItemsPerRequest || Infinity,
    );
    const maxBytes = Math.min(this.maxSendBytes, limits.maxMessageBytes || Infinity) - REQUEST_HEADROOM_BYTES;
    const concurrency = positiveInt(opts.concurrency, 'concurrency') ?? this.concurrency;
    const raw = opts.raw ?? false;
    const format = 'EMBEDDING_FORMAT_F32LE_BYTES' as const;

    const loadText = (i: number): string => {
      if (limits.maxTextChars > 0 && texts[i].length > limits.maxTextChars) {
        throw invalidArgument(
          `text is ${texts[i].length} characters; the server accepts at most ${limits.maxTextChars}`,
          textPos(i),
        );
      }
      return texts[i];
    };
    const loadImage = async (i: number): Promise<Buffer> => {
      const bytes = await imageBytes(images[i], imagePos(i));
      if (limits.maxImageBytes > 0 && bytes.length > limits.maxImageBytes) {
        throw invalidArgument(
          `image is ${bytes.length} bytes; the server accepts at most ${limits.maxImageBytes}`,
          imagePos(i),
        );
      }
      return bytes;
    };
    async function* jobs(): AsyncGenerator<Job> {
      for await (const batch of batchesOf(texts.length, loadText, (t) => Buffer.byteLength(t, 'utf8'), {
        maxItems,
        maxBytes,
      }))
        yield { kind: 'text', batch };
      for await (const batch of batchesOf(images.length, loadImage, (b) => b.length, { maxItems, maxBytes }))
        yield { kind: 'image', batch };
    }

    let completed = 0;
    // One operation, one model version: unpinned, the first answer's version pins the rest.
    let opVersion = this.versionFor(opts);
    await runBounded(jobs(), concurrency, opts.signal, async (job, signal) => {
      const { offset, items } = job.batch;
      const pos = job.kind === 'text' ? textPos : imagePos;
      const toInputIndex = (i: number): number | undefined => (i < items.length ? pos(offset + i) : undefined);
      const deadline = opDeadline ?? resolveDeadline(undefined, this.defaultTimeoutMs);
      const send = (modelVersion: string) =>
        job.kind === 'text'
          ? this.unary<wire.EmbedTextRequest, wire.EmbedResponse>(
              'EmbedText',
              { texts: job.batch.items, raw, format, modelVersion },
              opts,
              toInputIndex,
              signal,
              deadline,
            )
          : this.unary<wire.EmbedImageRequest, wire.EmbedResponse>(
              'EmbedImage',
              { images: job.batch.items, raw, format, modelVersion },
              opts,
              toInputIndex,
              signal,
              deadline,
            );
      let res = await send(opVersion);
      if (opVersion === '') opVersion = res.modelVersion;
      // Sent unpinned before the first answer came, and an activation happened in between.
      else if (res.modelVersion !== opVersion) res = await send(opVersion);
      if (res.modelVersion !== opVersion) {
        throw new ClipServeError({
          code: Status.INTERNAL,
          details: `the server answered with model version ${JSON.stringify(res.modelVersion)} to a call pinned to ${JSON.stringify(opVersion)}`,
          itemIndex: pos(offset),
        });
      }
      if (res.embeddings.length !== items.length) {
        throw new ClipServeError({
          code: Status.INTERNAL,
          details: `the server returned ${res.embeddings.length} embeddings for ${items.length} ${job.kind}s`,
          itemIndex: pos(offset),
        });
      }
      res.embeddings.forEach((e, i) => (out[pos(offset + i)] = decodeEmbedding(e, res.dim)));
      completed += items.length;
      opts.onProgress?.({ completed, total, modelVersion: opVersion });
    });
    return out;
  }
}

function positiveInt(v: number | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 1) throw new RangeError(`${name} must be an integer >= 1`);
  return v;
}

function nonNegativeInt(v: number | undefined, name: string): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be an integer >= 0`);
  return v;
}

function checkTexts(texts: string[] | undefined, what: string): string[] {
  if (!Array.isArray(texts)) throw invalidArgument(`${what} must be an array of strings`);
  texts.forEach((t, i) => checkText(t, i));
  return texts;
}
