/**
 * CLIP's heads over embedded items, shared by the gRPC handlers (grpc/embedding-service.ts) and the
 * HTTP routes (http/routes/tasks.ts), so both protocols validate, embed and score exactly alike:
 * Similarity (open_clip's model(image, text) logits and softmax), Rank (one query against text and
 * image candidates) and Classify (zero-shot, open_clip's build_zero_shot_classifier). Field names in
 * messages are the proto's, which the HTTP JSON bodies mirror.
 */
import type { ItemNames, RequestWork } from '../grpc/request-work';
import { invalidArgument } from '../grpc/status';
import { checkCount, checkLabels, checkTemplates, checkTextLength, checkTextLengths, checkTotal, type RequestLimits } from '../grpc/validate';
import { dot, l2normalized, mean, softmax } from '../grpc/vectors';
import type { TextEmbedding } from './embedder';

export interface SimilarityResult {
  logitsPerImage: number[][];
  logitsPerText: number[][];
  /** Per image, softmax over the texts. */
  probs: number[][];
  textTruncated: boolean[];
}

export async function similarity(work: RequestWork, logitScale: number, images: readonly Uint8Array[], texts: readonly string[], limits: RequestLimits): Promise<SimilarityResult> {
  checkCount('images', images.length, 1, limits);
  checkCount('texts', texts.length, 1, limits);
  checkTotal('images + texts', images.length + texts.length, limits);
  checkTextLengths('texts', texts, limits);
  const imagesP = work.images(images, 'images');
  const textsP = work.texts(texts, 'texts');
  const [imgs, txts] = await Promise.all([imagesP, textsP]);
  const img = imgs.map((v) => l2normalized(v));
  const txt = txts.map((t) => l2normalized(t.vector));
  // model(image, text): logits_per_image = logit_scale · img @ txt.T; probs = softmax(dim=-1).
  const logits = img.map((i) => txt.map((t) => logitScale * dot(i, t)));
  return {
    logitsPerImage: logits,
    logitsPerText: txt.map((_, j) => logits.map((row) => row[j])),
    probs: logits.map((row) => softmax(row)),
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
    'text' in query ? work.texts([query.text], queryItem).then((r) => r[0].vector) : work.images([query.image], queryItem).then((r) => r[0]);
  const textsP = candidateTexts.length > 0 ? work.texts(candidateTexts, nameOfText) : Promise.resolve([] as TextEmbedding[]);
  const imagesP = candidateImages.length > 0 ? work.images(candidateImages, names.candidateImages ?? 'candidate_images') : Promise.resolve([] as Float32Array[]);
  const [queryRaw, texts, images] = await Promise.all([queryP, textsP, imagesP]);
  const q = l2normalized(queryRaw);
  const candidates = [
    ...texts.map((t, index) => ({ modality: 'text' as const, index, score: dot(q, l2normalized(t.vector)) })),
    ...images.map((v, index) => ({ modality: 'image' as const, index, score: dot(q, l2normalized(v)) })),
  ];
  const logits = candidates.map((c) => logitScale * c.score);
  const probs = softmax(logits);
  const ranked = candidates.map((c, k) => ({ ...c, logit: logits[k], probability: probs[k], order: k }));
  ranked.sort((a, b) => b.score - a.score || a.order - b.order);
  const kept = topK > 0 ? ranked.slice(0, topK) : ranked;
  return kept.map(({ modality, index, score, logit, probability }) => ({ modality, index, score, logit, probability }));
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
  // open_clip build_zero_shot_classifier: per class, normalize each template embedding, average
  // them, normalize the mean.
  const classWeights = labels.map((_, c) =>
    l2normalized(mean(promptEmbeddings.slice(c * templates.length, (c + 1) * templates.length).map((p) => l2normalized(p.vector)))),
  );
  return imgs.map((raw) => {
    const img = l2normalized(raw);
    const logits = classWeights.map((w) => logitScale * dot(img, w));
    const probs = softmax(logits);
    const scored = labels.map((label, index) => ({ label, index, probability: probs[index], logit: logits[index] }));
    scored.sort((a, b) => b.probability - a.probability || a.index - b.index);
    return topK > 0 ? scored.slice(0, topK) : scored;
  });
}
