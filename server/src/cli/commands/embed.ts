/**
 * `clipserve embed --model <bundle> [--text T]… [--image FILE]… [--raw] [--json]`: embeds texts and
 * images with a local bundle. Embeddings are L2-normalised unless --raw. --json prints one JSON
 * array holding the embeddings, texts first, each group in the order given.
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { resolveModelRef } from '../../hub';
import { encodeInBatches } from '../../inference/batch-encode';
import { l2normalize, similarityLogits, softmax } from '../../inference/heads';
import { loadModel, type LoadedModel } from '../../runtime/model';

interface EmbedFlags {
  model: string;
  text: string[];
  image: string[];
  raw?: boolean;
  json?: boolean;
  provider: string;
}

const collect = (v: string, acc: string[]): string[] => [...acc, v];

function rows(flat: Float32Array, dim: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < flat.length; i += dim) out.push(Array.from(flat.subarray(i, i + dim)));
  return out;
}

async function embedAll(
  model: LoadedModel,
  texts: string[],
  images: string[],
): Promise<{ text: Float32Array; image: Float32Array }> {
  // One batch per modality: the few items of a command line.
  const { text } = await encodeInBatches(model, texts, { batchSize: Math.max(1, texts.length), text: (t) => t });
  const { image } = await encodeInBatches(model, images, {
    batchSize: Math.max(1, images.length),
    image: async (file) => {
      let bytes: Buffer;
      try {
        bytes = await fs.promises.readFile(file);
      } catch (err) {
        throw new Error(`cannot read image ${file}: ${(err as Error).message}`);
      }
      try {
        return await model.preprocessImage(bytes);
      } catch (err) {
        throw new Error(`${file}: ${(err as Error).message}`);
      }
    },
  });
  return { text, image };
}

export function register(program: Command): void {
  program
    .command('embed')
    .description('embed texts and images with a local model bundle')
    .requiredOption('-m, --model <ref>', 'model bundle directory or hf-hub:<org>/<repo>[@revision]')
    .option('-t, --text <text>', 'a text to embed (repeatable)', collect, [])
    .option('-i, --image <file>', 'an image file to embed (repeatable)', collect, [])
    .option('--raw', 'print raw (unnormalised) features')
    .option('--json', 'print the embeddings as one JSON array (texts first, then images, each in the order given)')
    .option('--provider <p>', 'execution provider: auto, cpu or cuda', 'auto')
    .action(async (flags: EmbedFlags) => {
      if (!flags.text.length && !flags.image.length)
        throw new Error('nothing to embed: give at least one --text or --image');
      if (!['auto', 'cpu', 'cuda'].includes(flags.provider))
        throw new Error(`--provider must be auto, cpu or cuda, got "${flags.provider}"`);
      const model = await loadModel(await resolveModelRef(flags.model), {
        provider: flags.provider as 'auto' | 'cpu' | 'cuda',
        preprocessWorkers: Math.min(2, Math.max(1, flags.image.length)),
      });
      try {
        const E = model.info.embedDim;
        const raw = await embedAll(model, flags.text, flags.image);
        const text = flags.raw ? raw.text : l2normalize(raw.text, E);
        const image = flags.raw ? raw.image : l2normalize(raw.image, E);
        if (flags.json) {
          process.stdout.write(JSON.stringify([...rows(text, E), ...rows(image, E)]) + '\n');
          return;
        }
        const i = model.info;
        const lines = [
          `model ${i.name} ${i.version}${i.demo ? ' (demo, random weights)' : ''}: dim ${E}, ${i.precision}, ${i.provider}; ${flags.raw ? 'raw' : 'L2-normalised'} embeddings`,
        ];
        const show = (kind: string, label: string, v: number[]): void => {
          const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
          lines.push(
            `${kind} ${JSON.stringify(label)}: ‖x‖=${norm.toFixed(4)} [${v
              .slice(0, 4)
              .map((x) => x.toFixed(4))
              .join(', ')}${E > 4 ? ', …' : ''}]`,
          );
        };
        rows(text, E).forEach((v, k) => show('text ', flags.text[k], v));
        rows(image, E).forEach((v, k) => show('image', flags.image[k], v));
        if (flags.text.length && flags.image.length) {
          const { logitsPerImage } = similarityLogits(raw.image, raw.text, E, i.logitScale);
          lines.push('logits (image × text, softmax over texts):');
          flags.image.forEach((img, r) => {
            const row = Array.from(logitsPerImage.subarray(r * flags.text.length, (r + 1) * flags.text.length));
            const probs = softmax(row);
            lines.push(
              `  ${img}: ${row.map((x, c) => `${x.toFixed(2)} (${(100 * probs[c]).toFixed(1)}%)`).join('  ')}`,
            );
          });
        }
        process.stdout.write(lines.join('\n') + '\n');
      } finally {
        await model.close();
      }
    });
}
