/**
 * GPT-2 / CLIP byte-level alphabet: every byte maps to one printable character so BPE can run
 * on strings. Bytes 0x21–0x7E, 0xA1–0xAC and 0xAE–0xFF map to the character with the same code;
 * the other 68 bytes, in increasing order, map to U+0100, U+0101, ...
 */

/** The 256 byte characters in vocabulary order: self-mapped bytes first, then the remapped ones. */
export const BYTE_CHARS_IN_VOCAB_ORDER: readonly string[] = (() => {
  const selfMapped: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) selfMapped.push(b);
  for (let b = 0xa1; b <= 0xac; b++) selfMapped.push(b);
  for (let b = 0xae; b <= 0xff; b++) selfMapped.push(b);
  const chars = selfMapped.map((b) => String.fromCharCode(b));
  let next = 0x100;
  for (let b = 0; b < 256; b++) if (!selfMapped.includes(b)) chars.push(String.fromCharCode(next++));
  return chars;
})();

/** BYTE_TO_CHAR[b]: the character byte b is written as. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array(256);
  const selfMapped = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0x100;
  for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(selfMapped(b) ? b : next++);
  return table;
})();

/** BYTE_TO_VOCAB_INDEX[b]: the position of byte b's character among ids 0–255. */
export const BYTE_TO_VOCAB_INDEX: Int32Array = (() => {
  const index = new Int32Array(256);
  const pos = new Map(BYTE_CHARS_IN_VOCAB_ORDER.map((ch, i) => [ch, i]));
  for (let b = 0; b < 256; b++) index[b] = pos.get(BYTE_TO_CHAR[b]) as number;
  return index;
})();
