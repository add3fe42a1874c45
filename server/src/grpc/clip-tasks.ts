/**
 * CLIP's tasks over embedded items (validate, embed, then the head math of inference/heads.ts), shared by the gRPC handlers (grpc/embedding-service.ts) and the
 * HTTP routes (http/routes/tasks.ts), so both protocols validate, embed and score exactly alike:
 * Similarity (open_clip's model(image, text) logits and softmax), Rank (one query against text and
 * image candidates) and Classify (zero-shot, open_clip's build_zero_shot_classifier). Field names in
 * messages are the proto's, which the HTTP JSON bodies mirror.
 */
import { classifyImage, imageTextLogits, rankByCosine, zeroShotClassifier } from '../inference/heads';
import type { TextEmbedding } from '../inference/embedder';
import type { ItemNames, RequestWork } from './request-work';
import { invalidArgument } from './status';
import {
  checkCount,
  checkLabels,
  checkTemplates,
  checkTextLength,
  checkTextLengths,
  checkTotal,
  type RequestLimits,
} from './validate';

export interface SimilarityResult {
  logitsPerImage: number[][];
  logitsPerText: number[][];
  /** Per image, softmax over the texts. */
  probs: number[][];
  textTruncated: boolean[];
}

export async function similarity(
  work: RequestWork,
  logitScale: number,
  images: readonly Uint8Array[],
  texts: readonly string[],
  limits: RequestLimits,
): Promise<SimilarityResult> {
  checkCount('images', images.length, 1, limits);
  checkCount('texts', texts.length, 1, limits);
  checkTotal('images + texts', images.length + texts.length, limits);
  checkTextLengths('texts', texts, limits);
  const imagesP = work.images(images, 'images');
  const textsP = work.texts(texts, 'texts');
  const [imgs, txts] = await Promise.all([imagesP, textsP]);
  return {
    ...imageTextLogits(
      imgs,
      txts.map((t) => t.vector),
      logitScale,
    ),
    textTruncated: txts.map((t) => t.truncated),
  };
}

export type RankQuery = { text: string } | { image: Uint8Array };

export interface RankedCandidate {
  modality: 'text' | 'image';
  /** Index in its own list (candidate texts or candidate images). */
  index: number;
  /** Cosine similarity to the query. */
  score: number;
  logit: number;
  /** Softmax of the logits over all candidates (before top-k). */
  probability: number;
}

/** How a caller names the query and candidates in errors (default: the proto's field names). */
export interface RankItemNames {
  query?: string;
  candidateTexts?: ItemNames;
  candidateImages?: ItemNames;
}

/** Candidates best first; equal scores keep input order (texts, then images), so results are deterministic. */
export async function rank(
  work: RequestWork,
  logitScale: number,
  query: RankQuery | undefined,
  candidateTexts: readonly string[],
  candidateImages: readonly Uint8Array[],
  topK: number,
  limits: RequestLimits,
  names: RankItemNames = {},
): Promise<RankedCandidate[]> {
  if (query === undefined) throw invalidArgument('query: one of query_text or query_image is required');
  const nCandidates = candidateTexts.length + candidateImages.length;
  if (nCandidates === 0) checkCount('candidate_texts + candidate_images', 0, 1, limits);
  checkTotal('query + candidates', 1 + nCandidates, limits);
  const queryName = names.query ?? ('text' in query ? 'query_text' : 'query_image');
  // The gRPC API has always named a failing query item as a list's first ("query_image[0]").
  const queryItem: ItemNames = names.query !== undefined ? () => queryName : queryName;
  const textNames = names.candidateTexts ?? 'candidate_texts';
  const nameOfText = typeof textNames === 'string' ? (i: number) => `${textNames}[${i}]` : textNames;
  if ('text' in query) checkTextLength(queryName, query.text, limits);
  candidateTexts.forEach((t, i) => checkTextLength(nameOfText(i), t, limits));
  const queryP: Promise<Float32Array> =
    'text' in query
      ? work.texts([query.text], queryItem).then((r) => r[0].vector)
      : work.images([query.image], queryItem).then((r) => r[0]);
  const textsP =
    candidateTexts.length > 0 ? work.texts(candidateTexts, nameOfText) : Promise.resolve([] as TextEmbedding[]);
  const imagesP =
    candidateImages.length > 0
      ? work.images(candidateImages, names.candidateImages ?? 'candidate_images')
      : Promise.resolve([] as Float32Array[]);
  const [queryRaw, texts, images] = await Promise.all([queryP, textsP, imagesP]);
  const ranked = rankByCosine<Pick<RankedCandidate, 'modality' | 'index'>>(
    queryRaw,
    [
      ...texts.map((t, index) => ({ item: { modality: 'text' as const, index }, vector: t.vector })),
      ...images.map((v, index) => ({ item: { modality: 'image' as const, index }, vector: v })),
    ],
    logitScale,
  );
  const kept = topK > 0 ? ranked.slice(0, topK) : ranked;
  return kept.map(({ item, score, logit, probability }) => ({ ...item, score, logit, probability }));
}

export interface LabelScore {
  label: string;
  index: number;
  probability: number;
  logit: number;
}

/** Per image, the labels most probable first (top_k of them when top_k > 0). */
export async function classify(
  work: RequestWork,
  logitScale: number,
  images: readonly Uint8Array[],
  labels: readonly string[],
  templateList: readonly string[],
  topK: number,
  limits: RequestLimits,
): Promise<LabelScore[][]> {
  checkCount('images', images.length, 1, limits);
  checkLabels(labels, limits);
  const templates = checkTemplates(templateList);
  // A replacer function: a string replacement would expand `$&`, `$'`… inside the label.
  const prompts = labels.flatMap((label) => templates.map((t) => t.replace('{}', () => label)));
  checkTotal('labels × templates', prompts.length, limits);
  checkTotal('images + labels × templates', images.length + prompts.length, limits);
  checkTextLengths('prompts', prompts, limits);
  const [imgs, promptEmbeddings] = await Promise.all([work.images(images, 'images'), work.texts(prompts, 'prompts')]);
  const classWeights = zeroShotClassifier(
    promptEmbeddings.map((p) => p.vector),
    templates.length,
  );
  return imgs.map((raw) => {
    const { logits, probs } = classifyImage(raw, classWeights, logitScale);
    const scored = labels.map((label, index) => ({ label, index, probability: probs[index], logit: logits[index] }));
    scored.sort((a, b) => b.probability - a.probability || a.index - b.index);
    return topK > 0 ? scored.slice(0, topK) : scored;
  });
}
