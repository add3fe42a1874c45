/**
 * The byte codecs ftfy uses to undo mojibake: single-byte code pages (including ftfy's
 * "sloppy" variants) and the "utf-8-variants" decoder (UTF-8 that also accepts CESU-8
 * surrogate pairs and the Java-style overlong NUL C0 80).
 *
 * Byte strings are represented as JS "binary strings": one char per byte, code 0-255. That
 * keeps ftfy's byte-level regexes (restore_byte_a0, replace_lossy_sequences) plain JS regexes.
 */
import { CODEPAGE_UPPER_HALF } from './tables.generated';

const REPLACEMENT_CHAR = '\ufffd';

/** A single-byte code page: its 256-char decoding table and the reverse map. */
export interface Charmap {
  readonly name: string;
  /** decode[b] = the character byte b decodes to; undefined bytes are absent (strict codec). */
  readonly decode: readonly (string | undefined)[];
  /** char code -> byte. Only characters the code page can represent. */
  readonly encode: ReadonlyMap<number, number>;
}

function buildCharmap(name: string, table: (string | undefined)[]): Charmap {
  const encode = new Map<number, number>();
  // CPython's charmap_build keeps the first byte for a character that appears twice; ftfy's
  // tables have no such duplicates, but keep the same precedence regardless.
  table.forEach((ch, byte) => {
    if (ch !== undefined && !encode.has(ch.charCodeAt(0))) encode.set(ch.charCodeAt(0), byte);
  });
  return { name, decode: table, encode };
}

function standardTable(cp: string): (string | undefined)[] {
  const upper = CODEPAGE_UPPER_HALF[cp];
  if (upper === undefined || upper.length !== 128) throw new Error(`no code page table for ${cp}`);
  const table: (string | undefined)[] = [];
  for (let b = 0; b < 0x80; b++) table.push(String.fromCharCode(b));
  for (const ch of upper) table.push(ch === REPLACEMENT_CHAR ? undefined : ch);
  return table;
}

/**
 * ftfy's bad_codecs/sloppy.py rule: start from Latin-1, overlay every byte the real code page
 * defines, and let byte 0x1A stand for U+FFFD (ftfy's marker for a byte lost to '�').
 */
function sloppyTable(cp: string): (string | undefined)[] {
  const table = standardTable(cp).map((ch, byte) => ch ?? String.fromCharCode(byte));
  table[0x1a] = REPLACEMENT_CHAR;
  return table;
}

/** The code pages of ftfy's chardata.CHARMAP_ENCODINGS, in the order ftfy tries them. */
export const CHARMAP_ENCODINGS: readonly Charmap[] = [
  buildCharmap('latin-1', standardTable('latin-1')),
  buildCharmap('sloppy-windows-1252', sloppyTable('windows-1252')),
  buildCharmap('sloppy-windows-1251', sloppyTable('windows-1251')),
  buildCharmap('sloppy-windows-1250', sloppyTable('windows-1250')),
  buildCharmap('sloppy-windows-1253', sloppyTable('windows-1253')),
  buildCharmap('sloppy-windows-1254', sloppyTable('windows-1254')),
  buildCharmap('sloppy-windows-1257', sloppyTable('windows-1257')),
  buildCharmap('iso-8859-2', standardTable('iso-8859-2')),
  buildCharmap('macroman', standardTable('macroman')),
  buildCharmap('cp437', standardTable('cp437')),
];

export const SLOPPY_WINDOWS_1252: Charmap = CHARMAP_ENCODINGS[1];
/** The strict Windows-1252 codec (undefined bytes raise), used for Latin-1 → Windows-1252. */
export const WINDOWS_1252: Charmap = buildCharmap('windows-1252', standardTable('windows-1252'));

/**
 * The set of characters a text may contain to be "possibly" in this encoding, as ftfy's
 * chardata._build_regexes: ASCII except U+001A, plus whatever bytes 0x80-0xFF and 0x1A
 * decode to.
 */
function possibleChars(cm: Charmap): Set<number> {
  const ok = new Set<number>();
  for (let c = 0; c < 0x80; c++) if (c !== 0x1a) ok.add(c);
  for (let b = 0x80; b < 0x100; b++) {
    const ch = cm.decode[b];
    if (ch !== undefined) ok.add(ch.charCodeAt(0));
  }
  const sub = cm.decode[0x1a];
  if (sub !== undefined) ok.add(sub.charCodeAt(0));
  return ok;
}

const POSSIBLE = new Map<Charmap, Set<number>>(CHARMAP_ENCODINGS.map((cm) => [cm, possibleChars(cm)]));

/** ftfy chardata.possible_encoding: could `text` have been decoded from this code page? */
export function possibleEncoding(text: string, cm: Charmap): boolean {
  const ok = POSSIBLE.get(cm) ?? possibleChars(cm);
  for (let i = 0; i < text.length; i++) if (!ok.has(text.charCodeAt(i))) return false;
  return true;
}

export function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** Encodes text with a code page into a binary string; throws if a character has no byte. */
export function encodeCharmap(text: string, cm: Charmap): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const b = cm.encode.get(text.charCodeAt(i));
    if (b === undefined) throw new CodecError(`'${cm.name}' cannot encode U+${text.charCodeAt(i).toString(16)}`);
    out += String.fromCharCode(b);
  }
  return out;
}

/** Decodes a binary string with a code page; throws on a byte the code page leaves undefined. */
export function decodeCharmap(bytes: string, cm: Charmap): string {
  let out = '';
  for (let i = 0; i < bytes.length; i++) {
    const ch = cm.decode[bytes.charCodeAt(i)];
    if (ch === undefined) throw new CodecError(`'${cm.name}' cannot decode byte 0x${bytes.charCodeAt(i).toString(16)}`);
    out += ch;
  }
  return out;
}

/** A decode that Python would raise UnicodeDecodeError / UnicodeEncodeError for. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function binaryToBuffer(bytes: string): Buffer {
  return Buffer.from(bytes, 'latin1');
}

/** Python's bytes.decode('utf-8') (strict; a BOM is kept as U+FEFF). */
export function decodeUtf8Strict(bytes: string): string {
  try {
    return STRICT_UTF8.decode(binaryToBuffer(bytes));
  } catch {
    throw new CodecError('invalid utf-8');
  }
}

/**
 * ftfy's "utf-8-variants" codec: strict UTF-8, except that C0 80 decodes to U+0000 and a
 * CESU-8 surrogate pair ED [A0-AF] xx ED [B0-BF] xx decodes to the astral character it encodes.
 * Any other invalid sequence (a lone encoded surrogate included) is an error.
 */
export function decodeUtf8Variants(bytes: string): string {
  let out = '';
  let start = 0; // start of the pending run of ordinary bytes
  let i = 0;
  const n = bytes.length;
  const at = (k: number): number => (k < n ? bytes.charCodeAt(k) : -1);
  while (i < n) {
    const b = bytes.charCodeAt(i);
    if (b === 0xc0 && at(i + 1) === 0x80) {
      out += decodeUtf8Strict(bytes.slice(start, i)) + '\u0000';
      i += 2;
      start = i;
    } else if (
      b === 0xed &&
      at(i + 1) >= 0xa0 &&
      at(i + 1) <= 0xaf &&
      at(i + 2) >= 0x80 &&
      at(i + 2) <= 0xbf &&
      at(i + 3) === 0xed &&
      at(i + 4) >= 0xb0 &&
      at(i + 4) <= 0xbf &&
      at(i + 5) >= 0x80 &&
      at(i + 5) <= 0xbf
    ) {
      const cp =
        ((at(i + 1) & 0x0f) << 16) +
        ((at(i + 2) & 0x3f) << 10) +
        ((at(i + 4) & 0x0f) << 6) +
        (at(i + 5) & 0x3f) +
        0x10000;
      out += decodeUtf8Strict(bytes.slice(start, i)) + String.fromCodePoint(cp);
      i += 6;
      start = i;
    } else {
      i++;
    }
  }
  return out + decodeUtf8Strict(bytes.slice(start));
}
