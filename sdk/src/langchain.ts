/**
 * @clipserve/sdk/langchain — LangChain.js Embeddings backed by clipserve.
 *
 * CLIP embeds texts and images into one space, so a vector store filled through embedDocuments can
 * be searched with an image (embedImages) as well as with a text (embedQuery). @langchain/core is
 * an optional peer dependency: only this entry point imports it.
 */
import { Embeddings, type EmbeddingsParams } from '@langchain/core/embeddings';
import { ClipClient, type ClipClientOptions } from './client.js';
import type { EmbedOptions, ImageInput } from './types.js';

export interface ClipServeEmbeddingsParams extends EmbeddingsParams {
  /** An existing client (not closed by this class), or the options to create one. */
  client?: ClipClient;
  clientOptions?: ClipClientOptions;
  /** Passed to every embed call (timeoutMs, maxItemsPerRequest, concurrency, raw, …). */
  embedOptions?: Omit<EmbedOptions, 'onProgress' | 'signal'>;
}

export class ClipServeEmbeddings extends Embeddings {
  readonly client: ClipClient;
  private readonly embedOptions: Omit<EmbedOptions, 'onProgress' | 'signal'>;

  constructor(params: ClipServeEmbeddingsParams) {
    // Retries already happen inside the client (gRPC retry policy, for the codes where a retry can
    // help); LangChain's AsyncCaller would otherwise also retry invalid input six times.
    super({ maxRetries: 0, ...params });
    if (params.client) this.client = params.client;
    else if (params.clientOptions) this.client = new ClipClient(params.clientOptions);
    else throw new TypeError('ClipServeEmbeddings needs { client } or { clientOptions }');
    this.embedOptions = { ...params.embedOptions };
  }

  async embedDocuments(documents: string[]): Promise<number[][]> {
    // The client splits the list into requests and bounds their concurrency; the AsyncCaller applies
    // LangChain's maxConcurrency across calls, as every LangChain Embeddings does.
    const vectors = await this.caller.call(() => this.client.embedTexts(documents, this.embedOptions));
    return vectors.map((v) => Array.from(v));
  }

  async embedQuery(document: string): Promise<number[]> {
    const [vector] = await this.caller.call(() => this.client.embedTexts([document], this.embedOptions));
    return Array.from(vector);
  }

  /** Image vectors in the same space as the text vectors. */
  async embedImages(images: ImageInput[]): Promise<number[][]> {
    const vectors = await this.caller.call(() => this.client.embedImages(images, this.embedOptions));
    return vectors.map((v) => Array.from(v));
  }
}
