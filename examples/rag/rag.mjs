#!/usr/bin/env node
/**
 * A small retrieval pipeline over a folder of images and captions, on clipserve:
 *
 *   1. index:    every image in --dir (png, jpg, jpeg, webp, gif) and its caption (<name>.txt next
 *                to it, optional) are embedded with embedImages / embedTexts into one vector space;
 *   2. retrieve: a text query is compared with the image and caption vectors, an image query with
 *                the image vectors (cosine, exact search: fine for thousands of items);
 *   3. re-rank:  the best --candidates hits (their images and captions) go through the server's
 *                Rank, which scores them against the query in one call; the top --k are printed
 *                as JSON.
 *
 * Usage:
 *   node rag.mjs --server 127.0.0.1:50051 --dir ./photos --text "a red bicycle" --image ./query.jpg --k 3
 *
 * The functions are exported too, for use as a library.
 */
import { readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ClipClient, cosine } from '@clipserve/sdk';

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif']);

/**
 * @typedef {{ name: string, imagePath: string, caption: string, imageVector: Float32Array, captionVector: Float32Array | undefined }} Entry
 * @typedef {{ entry: Entry, score: number }} Hit
 * @typedef {{ name: string, caption: string, retrievalScore: number, rerankScore: number, rerankProbability: number, matchedBy: 'text' | 'image' }} Result
 */

/** Reads the folder and embeds images and captions. @returns {Promise<Entry[]>} */
export async function buildIndex(client, dir, { onProgress } = {}) {
  const files = (await readdir(dir)).filter((f) => IMAGE_EXTENSIONS.has(path.extname(f).toLowerCase())).sort();
  if (files.length === 0) throw new Error(`no images (${[...IMAGE_EXTENSIONS].join(', ')}) in ${dir}`);
  const imagePaths = files.map((f) => path.join(dir, f));
  const captions = await Promise.all(
    files.map(async (f) => {
      try {
        return (await readFile(path.join(dir, `${path.parse(f).name}.txt`), 'utf8')).trim();
      } catch (err) {
        if (err.code === 'ENOENT') return '';
        throw err;
      }
    }),
  );
  // File paths go straight to the SDK, which reads them lazily, one request ahead of the server.
  const imageVectors = await client.embedImages(imagePaths, { onProgress });
  const captioned = captions.map((c, i) => (c ? i : -1)).filter((i) => i >= 0);
  const captionVectors = await client.embedTexts(captioned.map((i) => captions[i]));
  const byEntry = new Map(captioned.map((entryIndex, k) => [entryIndex, captionVectors[k]]));
  return files.map((f, i) => ({
    name: f,
    imagePath: imagePaths[i],
    caption: captions[i],
    imageVector: imageVectors[i],
    captionVector: byEntry.get(i),
  }));
}

/** Exact nearest neighbours; an entry scores the best of its image and (if asked) caption vector. @returns {Hit[]} */
export function nearest(index, vector, { limit, useCaptions }) {
  const hits = index.map((entry) => {
    let score = cosine(vector, entry.imageVector);
    if (useCaptions && entry.captionVector) score = Math.max(score, cosine(vector, entry.captionVector));
    return { entry, score };
  });
  // Stable sort: equal scores keep folder order, so results are reproducible.
  return hits.sort((a, b) => b.score - a.score).slice(0, limit);
}

/**
 * Re-scores the hits against the query with the server's Rank, in one call over their images and
 * captions; an entry scores the better of the two. Best first. @returns {Promise<Result[]>}
 */
async function rerank(client, query, hits, k) {
  const captioned = hits.map((h, i) => (h.entry.caption ? i : -1)).filter((i) => i >= 0);
  const ranked = await client.rank(query, {
    images: hits.map((h) => h.entry.imagePath),
    texts: captioned.map((i) => hits[i].entry.caption),
  });
  const best = new Map();
  for (const r of ranked) {
    const hitIndex = r.modality === 'image' ? r.index : captioned[r.index];
    const prev = best.get(hitIndex);
    if (!prev || r.score > prev.score) best.set(hitIndex, r);
  }
  return [...best.entries()]
    .sort((a, b) => b[1].score - a[1].score || a[0] - b[0])
    .slice(0, k)
    .map(([hitIndex, r]) => {
      const { entry, score } = hits[hitIndex];
      return {
        name: entry.name,
        caption: entry.caption,
        retrievalScore: score,
        rerankScore: r.score,
        rerankProbability: r.probability,
        matchedBy: r.modality,
      };
    });
}

export async function retrieveByText(client, index, text, { k = 3, candidates = 10 } = {}) {
  const [vector] = await client.embedTexts([text]);
  return rerank(client, { text }, nearest(index, vector, { limit: Math.max(k, candidates), useCaptions: true }), k);
}

export async function retrieveByImage(client, index, imagePath, { k = 3, candidates = 10 } = {}) {
  const [vector] = await client.embedImages([imagePath]);
  return rerank(
    client,
    { image: imagePath },
    nearest(index, vector, { limit: Math.max(k, candidates), useCaptions: false }),
    k,
  );
}

async function main() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string', default: process.env.CLIPSERVE_ADDRESS ?? '127.0.0.1:50051' },
      dir: { type: 'string' },
      text: { type: 'string', multiple: true, default: [] },
      image: { type: 'string', multiple: true, default: [] },
      k: { type: 'string', default: '3' },
      candidates: { type: 'string', default: '10' },
      'api-key': { type: 'string' },
    },
  });
  if (!values.dir) throw new Error('--dir <folder of images and captions> is required');
  const k = Number(values.k);
  const candidates = Number(values.candidates);
  if (!Number.isInteger(k) || k < 1 || !Number.isInteger(candidates) || candidates < 1)
    throw new Error('--k and --candidates must be integers >= 1');
  const client = new ClipClient({ address: values.server, apiKey: values['api-key'] });
  try {
    const index = await buildIndex(client, values.dir, {
      onProgress: ({ completed, total }) => process.stderr.write(`indexed ${completed}/${total} images\n`),
    });
    const queries = [];
    for (const text of values.text)
      queries.push({
        kind: 'text',
        query: text,
        results: await retrieveByText(client, index, text, { k, candidates }),
      });
    for (const image of values.image)
      queries.push({
        kind: 'image',
        query: image,
        results: await retrieveByImage(client, index, image, { k, candidates }),
      });
    process.stdout.write(`${JSON.stringify({ indexed: index.length, queries }, null, 2)}\n`);
  } finally {
    client.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`clipserve-rag: ${err.message}\n`);
    process.exit(1);
  });
}
