/**
 * Port of the individual fixers of ftfy 6.3.1 `fixes.py` that `fix_text` runs by default.
 */
import { htmlUnescape } from '../html-unescape';
import {
  ALTERED_UTF8_RE,
  C1_CONTROL_RE_GLOBAL,
  DOUBLE_QUOTE_RE,
  HTML_ENTITIES,
  HTML_ENTITY_RE,
  LIGATURES,
  LIGATURE_RE,
  LOSSY_UTF8_RE,
  SINGLE_QUOTE_RE,
  UTF8_DETECTOR_RE,
  WIDTH_MAP,
  WIDTH_RE,
  isRemovableControl,
} from './chardata';
import { SLOPPY_WINDOWS_1252 } from './codecs';
import { isBad } from './badness';

/**
 * Decodes HTML entities with ftfy's own table (HTML5 names with ';', some upper-cased names);
 * numeric references go through html.unescape and are kept as-is when that leaves a ';'.
 */
export function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(HTML_ENTITY_RE, (entity) => {
    const named = HTML_ENTITIES.get(entity);
    if (named !== undefined) return named;
    if (entity.startsWith('&#')) {
      const unescaped = htmlUnescape(entity);
      return unescaped.includes(';') ? entity : unescaped;
    }
    return entity;
  });
}

// Python's `\d` on str patterns is any Unicode decimal digit.
// eslint-disable-next-line no-control-regex -- ESC (\x1b) opens an ANSI escape sequence: matching it is the point.
const ANSI_RE = /\x1b\[(?:\p{Nd}|;)*[a-zA-Z]/gu;

/** Strips "ANSI" terminal escape sequences such as colour codes. */
export function removeTerminalEscapes(text: string): string {
  return text.includes('\x1b') ? text.replace(ANSI_RE, '') : text;
}

/** Replaces curly quotes (and U+02BC) with straight ones. */
export function uncurlQuotes(text: string): string {
  return text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
}

export function fixLatinLigatures(text: string): string {
  return text.replace(LIGATURE_RE, (ch) => LIGATURES.get(ch) ?? ch);
}

export function fixCharacterWidth(text: string): string {
  return text.replace(WIDTH_RE, (ch) => WIDTH_MAP.get(ch) ?? ch);
}

/** CRLF, CR, U+2028, U+2029 and U+0085 all become '\n'. */
export function fixLineBreaks(text: string): string {
  return text.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
}

/**
 * Python's fix_surrogates joins surrogate pairs and replaces lone surrogates with U+FFFD. A JS
 * string already reads a well-formed pair as one character, so only lone ones need replacing.
 */
export function fixSurrogates(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** Deletes control characters that have no displayed effect (tab, LF, FF and CR stay). */
export function removeControlChars(text: string): string {
  let out = '';
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (isRemovableControl(text.charCodeAt(i))) {
      out += text.slice(start, i);
      start = i + 1;
    }
  }
  return start === 0 ? text : out + text.slice(start);
}

/** Replaces C1 controls with the Windows-1252 characters they stand for (0x81 etc. stay). */
export function fixC1Controls(text: string): string {
  // Latin-1 encoding of a C1 control is its own code; decode that byte as sloppy Windows-1252.
  return text.replace(C1_CONTROL_RE_GLOBAL, (ch) => SLOPPY_WINDOWS_1252.decode[ch.charCodeAt(0)] ?? ch);
}

// "à " that is a word on its own in Portuguese/Catalan/etc. is left alone; before other words
// the space was probably a NO-BREAK SPACE byte (0xA0) of "à".
const A_GRAVE_WORD_RE = /\xc3 (?! |quele|quela|quilo|s )/g;

/** On UTF-8 bytes: puts back 0xA0 bytes that some program turned into spaces. */
export function restoreByteA0(bytes: string): string {
  return bytes.replace(A_GRAVE_WORD_RE, '\xc3\xa0 ').replace(ALTERED_UTF8_RE, (m) => m.replace(/ /g, '\xa0'));
}

/** On UTF-8 bytes: sequences that lost bytes to '�' or '?' become one U+FFFD (EF BF BD). */
export function replaceLossySequences(bytes: string): string {
  return bytes.replace(LOSSY_UTF8_RE, '\xef\xbf\xbd');
}

/**
 * Fixes runs that look like UTF-8 mojibake in isolation, for text mixing encodings.
 * `fixEncoding` is passed in to avoid a module cycle with the main loop.
 */
export function decodeInconsistentUtf8(text: string, fixEncoding: (t: string) => string): string {
  return text.replace(UTF8_DETECTOR_RE, (substr) =>
    substr.length < text.length && isBad(substr) ? fixEncoding(substr) : substr,
  );
}
