/**
 * TypeScript port of ftfy 6.3.1 `fix_text` with its default configuration (what OpenCLIP's
 * tokenizer calls): HTML unescaping on lines without '<', mojibake repair, C1 controls,
 * ligatures, character width, quotes, line breaks, surrogates, terminal escapes, control
 * characters and NFC, applied line by line until the text stops changing.
 */
import { isBad } from './badness';
import { ALTERED_UTF8_TEST_RE, C1_CONTROL_RE, UTF8_DETECTOR_TEST_RE } from './chardata';
import {
  CHARMAP_ENCODINGS,
  CodecError,
  WINDOWS_1252,
  decodeCharmap,
  decodeUtf8Strict,
  decodeUtf8Variants,
  encodeCharmap,
  isAscii,
  possibleEncoding,
} from './codecs';
import {
  decodeInconsistentUtf8,
  fixC1Controls,
  fixCharacterWidth,
  fixLatinLigatures,
  fixLineBreaks,
  fixSurrogates,
  removeControlChars,
  removeTerminalEscapes,
  replaceLossySequences,
  restoreByteA0,
  uncurlQuotes,
  unescapeHtml,
} from './fixes';

export { badness, isBad } from './badness';

/** ftfy's TextFixerConfig.max_decode_length: the longest segment fixed in one piece. */
const MAX_DECODE_LENGTH = 1_000_000;

/**
 * One step of ftfy's `_fix_encoding_one_step_and_explain`: re-decode the text through the
 * first code page it fits that yields valid UTF-8, else the fallbacks. Returns the text unchanged
 * when nothing applies.
 */
function fixEncodingOneStep(text: string): string {
  if (text.length === 0 || isAscii(text) || !isBad(text)) return text;

  const possible1Byte: string[] = [];
  for (const cm of CHARMAP_ENCODINGS) {
    if (!possibleEncoding(text, cm)) continue;
    possible1Byte.push(cm.name);
    let bytes = encodeCharmap(text, cm);
    // Spaces that were once 0xA0 bytes; not for MacRoman, where "– " would be a false positive.
    if (cm.name !== 'macroman' && ALTERED_UTF8_TEST_RE.test(bytes)) bytes = restoreByteA0(bytes);
    if (cm.name.startsWith('sloppy')) bytes = replaceLossySequences(bytes);
    try {
      return bytes.includes('\xed') || bytes.includes('\xc0') ? decodeUtf8Variants(bytes) : decodeUtf8Strict(bytes);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
    }
  }

  // Sequences that look like UTF-8 mojibake, fixed in isolation.
  if (UTF8_DETECTOR_TEST_RE.test(text)) {
    const fixed = decodeInconsistentUtf8(text, fixEncoding);
    if (fixed !== text) return fixed;
  }

  // Latin-1 meant as Windows-1252. (ftfy's "text fits windows-1252 too" shortcut never fires:
  // its candidate list names only the sloppy variant.)
  if (possible1Byte.includes('latin-1')) {
    try {
      const fixed = decodeCharmap(text, WINDOWS_1252); // Latin-1 encoding is the identity here
      if (fixed !== text) return fixed;
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
    }
  }

  if (C1_CONTROL_RE.test(text)) return fixC1Controls(text);
  return text;
}

/** ftfy.fix_encoding: repeat single re-decoding steps until the text stops changing. */
export function fixEncoding(text: string): string {
  for (;;) {
    const prev = text;
    text = fixEncodingOneStep(text);
    if (text === prev) return text;
  }
}

/** ftfy.fix_and_explain for one segment, without the explanation. */
function fixSegment(segment: string, unescape: boolean): string {
  let text = segment;
  for (;;) {
    const orig = text;
    if (unescape) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = fixLatinLigatures(text);
    text = fixCharacterWidth(text);
    text = uncurlQuotes(text);
    text = fixLineBreaks(text);
    text = fixSurrogates(text);
    text = removeTerminalEscapes(text);
    text = removeControlChars(text);
    text = text.normalize('NFC');
    if (text === orig) return text;
  }
}

/**
 * ftfy.fix_text(text) with the default config. The text is fixed one line (through its '\n') at
 * a time; once a line contains '<', HTML unescaping stays off for the rest of the text, because
 * ftfy's "auto" setting is replaced for all later segments.
 */
export function fixText(text: string): string {
  let out = '';
  let pos = 0;
  let unescape = true;
  while (pos < text.length) {
    let brk = text.indexOf('\n', pos) + 1;
    if (brk === 0) brk = text.length;
    if (brk - pos > MAX_DECODE_LENGTH) brk = pos + MAX_DECODE_LENGTH;
    const segment = text.slice(pos, brk);
    if (unescape && segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = brk;
  }
  return out;
}
