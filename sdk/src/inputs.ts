/** Turns caller inputs into request bytes, with a clear error naming the bad item. */
import { readFile } from 'node:fs/promises';
import { invalidArgument, ClipServeError, Status } from './errors.js';
import type { EmbedItem, ImageInput } from './types.js';

/** Bytes of one image: buffers pass through without a copy, strings are file paths. */
export async function imageBytes(image: ImageInput, itemIndex?: number): Promise<Buffer> {
  if (Buffer.isBuffer(image)) return image;
  if (image instanceof Uint8Array) return Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (typeof image === 'string') {
    try {
      return await readFile(image);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new ClipServeError({
        code: code === 'ENOENT' ? Status.NOT_FOUND : Status.INVALID_ARGUMENT,
        details: `cannot read image file ${image}: ${(err as Error).message}`,
        itemIndex,
        cause: err,
      });
    }
  }
  throw invalidArgument(`an image must be a Buffer, a Uint8Array or a file path (got ${describe(image)})`, itemIndex);
}

export function checkText(text: unknown, itemIndex?: number): string {
  if (typeof text !== 'string') throw invalidArgument(`a text must be a string (got ${describe(text)})`, itemIndex);
  return text;
}

export type ClassifiedItem = { kind: 'text'; text: string } | { kind: 'image'; image: ImageInput };

export function classifyItem(item: EmbedItem, itemIndex: number): ClassifiedItem {
  if (typeof item === 'string') return { kind: 'text', text: item };
  if (item !== null && typeof item === 'object') {
    const hasText = 'text' in item;
    const hasImage = 'image' in item;
    if (hasText && !hasImage) return { kind: 'text', text: checkText((item as { text: unknown }).text, itemIndex) };
    if (hasImage && !hasText) return { kind: 'image', image: (item as { image: ImageInput }).image };
  }
  throw invalidArgument('an item must be a string, { text } or { image }', itemIndex);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}
