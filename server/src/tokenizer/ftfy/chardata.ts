/**
 * Port of the character data of ftfy 6.3.1 `chardata.py` that the default fixers use.
 * Byte-level regexes run on binary strings (one char per byte, see codecs.ts), so they are
 * written without the `u` flag.
 */
import { htmlUnescape } from '../html-unescape';
import { HTML5_ENTITIES, UTF8_CLUES as U } from './tables.generated';

/** Curly single quotes and U+02BC MODIFIER LETTER APOSTROPHE, straightened by uncurl_quotes. */
export const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
export const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;

/**
 * UTF-8 sequences that would be valid if a b'\xa0' had not been turned into a space by some
 * Windows-1252 program (restore_byte_a0). See ftfy's comment for why these lead bytes only.
 */
export const ALTERED_UTF8_RE = new RegExp(
  '[\\xc2\\xc3\\xc5\\xce\\xd0\\xd9][ ]' +
    '|[\\xe2\\xe3][ ][\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf]' +
    '|[\\xe0-\\xe3][\\x80-\\x84\\x86-\\x9f\\xa1-\\xbf][ ]' +
    '|[\\xf0][ ][\\x80-\\xbf][\\x80-\\xbf]' +
    '|[\\xf0][\\x80-\\xbf][ ][\\x80-\\xbf]' +
    '|[\\xf0][\\x80-\\xbf][\\x80-\\xbf][ ]',
  'g',
);
/** Non-global twin for `.test()`. */
export const ALTERED_UTF8_TEST_RE = new RegExp(ALTERED_UTF8_RE.source);

/**
 * UTF-8 / CESU-8 sequences that lost continuation bytes. Byte 0x1A stands for a byte that became
 * U+FFFD (the sloppy codecs encode U+FFFD as 0x1A); '?' is accepted at most once per sequence.
 */
export const LOSSY_UTF8_RE = new RegExp(
  '[\\xc2-\\xdf][\\x1a]' +
    '|[\\xc2-\\xc3][?]' +
    '|\\xed[\\xa0-\\xaf][\\x1a?]\\xed[\\xb0-\\xbf][\\x1a?\\x80-\\xbf]' +
    '|\\xed[\\xa0-\\xaf][\\x1a?\\x80-\\xbf]\\xed[\\xb0-\\xbf][\\x1a?]' +
    '|[\\xe0-\\xef][\\x1a?][\\x1a\\x80-\\xbf]' +
    '|[\\xe0-\\xef][\\x1a\\x80-\\xbf][\\x1a?]' +
    '|[\\xf0-\\xf4][\\x1a?][\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf]' +
    '|[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a?][\\x1a\\x80-\\xbf]' +
    '|[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf][\\x1a?]' +
    '|\\x1a',
  'g',
);

/** C1 control characters: Latin-1 positions that Windows-1252 assigns to printable characters. */
export const C1_CONTROL_RE = /[\x80-\x9f]/;
export const C1_CONTROL_RE_GLOBAL = /[\x80-\x9f]/g;

/**
 * Runs of likely UTF-8 mojibake (chardata.UTF8_DETECTOR_RE), not preceded by a strict
 * continuation character so that a few characters inside a larger garble are left alone.
 */
const UTF8_DETECTOR_SOURCE =
  `(?<![${U.utf8_continuation_strict}])` +
  `(?:[${U.utf8_first_of_2}][${U.utf8_continuation}]` +
  `|[${U.utf8_first_of_3}][${U.utf8_continuation}]{2}` +
  `|[${U.utf8_first_of_4}][${U.utf8_continuation}]{3})+`;
export const UTF8_DETECTOR_RE = new RegExp(UTF8_DETECTOR_SOURCE, 'gu');
/** Non-global twin for `.test()`, which would otherwise carry lastIndex between calls. */
export const UTF8_DETECTOR_TEST_RE = new RegExp(UTF8_DETECTOR_SOURCE, 'u');

/** ftfy chardata.HTML_ENTITY_RE: candidate entities for ftfy's own unescape_html. */
export const HTML_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

/**
 * ftfy's entity table: every HTML5 name that ends in ';', plus the upper-cased form of
 * lower-case names (&NTILDE; → Ñ) when that form is not already an entity by itself.
 */
export const HTML_ENTITIES: ReadonlyMap<string, string> = (() => {
  const table = new Map<string, string>();
  for (const [name, char] of Object.entries(HTML5_ENTITIES)) {
    if (!name.endsWith(';')) continue;
    table.set('&' + name, char);
    if (name === name.toLowerCase()) {
      const upper = '&' + name.toUpperCase();
      if (htmlUnescape(upper) === upper) table.set(upper, char.toUpperCase());
    }
  }
  return table;
})();

/** Code points remove_control_chars deletes (tab, LF, FF and CR survive). */
export function isRemovableControl(cp: number): boolean {
  return (
    cp <= 0x08 ||
    cp === 0x0b ||
    (cp >= 0x0e && cp <= 0x1f) ||
    cp === 0x7f ||
    (cp >= 0x206a && cp <= 0x206f) ||
    cp === 0xfeff ||
    (cp >= 0xfff9 && cp <= 0xfffc)
  );
}

/** Latin ligatures and legacy digraphs that fix_latin_ligatures spells out. */
export const LIGATURES: ReadonlyMap<string, string> = new Map([
  ['\u0132', 'IJ'],
  ['\u0133', 'ij'], // Dutch ligatures
  ['\u0149', '\u02bcn'], // Afrikaans digraph meant to avoid auto-curled quote
  ['\u01f1', 'DZ'],
  ['\u01f2', 'Dz'],
  ['\u01f3', 'dz'], // Serbian/Croatian digraphs
  ['\u01c4', 'D\u017d'],
  ['\u01c5', 'D\u017e'],
  ['\u01c6', 'd\u017e'],
  ['\u01c7', 'LJ'],
  ['\u01c8', 'Lj'],
  ['\u01c9', 'lj'],
  ['\u01ca', 'NJ'],
  ['\u01cb', 'Nj'],
  ['\u01cc', 'nj'],
  ['\ufb00', 'ff'],
  ['\ufb01', 'fi'],
  ['\ufb02', 'fl'],
  ['\ufb03', 'ffi'],
  ['\ufb04', 'ffl'],
  ['\ufb05', '\u017ft'],
  ['\ufb06', 'st'], // Latin typographical ligatures
]);
export const LIGATURE_RE = new RegExp(`[${[...LIGATURES.keys()].join('')}]`, 'g');

/**
 * fix_character_width's map: U+3000 IDEOGRAPHIC SPACE → ' ', and every character in
 * U+FF01–U+FFEF whose NFKC form differs (full-width ASCII, half-width katakana, ...).
 */
export const WIDTH_MAP: ReadonlyMap<string, string> = (() => {
  const map = new Map<string, string>([['\u3000', ' ']]);
  for (let cp = 0xff01; cp < 0xfff0; cp++) {
    const ch = String.fromCharCode(cp);
    const alt = ch.normalize('NFKC');
    if (alt !== ch) map.set(ch, alt);
  }
  return map;
})();
export const WIDTH_RE = /[\u3000\uff01-\uffef]/g;
