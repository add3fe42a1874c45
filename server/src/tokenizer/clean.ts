/**
 * OpenCLIP's `clean='lower'` text cleaning and its split regex.
 *
 *   ftfy.fix_text → html.unescape(html.unescape(.)) → strip → " ".join(split()) → strip → lower
 */
import { fixText } from './ftfy';
import { htmlUnescape } from './html-unescape';
import { pyJoinSplit, pyLower, pyStrip } from './python-str';

export function cleanText(text: string): string {
  let t = fixText(text);
  t = htmlUnescape(htmlUnescape(t));
  t = pyStrip(t);
  t = pyJoinSplit(t);
  t = pyStrip(t);
  return pyLower(t);
}

/** The Python `regex` module's `\s`: the Unicode White_Space property (no U+001C–U+001F). */
const REGEX_MODULE_SPACE_CLASS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/**
 * The split regex (Python `regex` module, IGNORECASE):
 *   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * With the `u` flag astral characters count as one code point, and `i` gives the same simple
 * case folding (so `'ſ` still matches `'s`).
 */
export const SPLIT_RE = new RegExp(
  `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${REGEX_MODULE_SPACE_CLASS}\\p{L}\\p{N}]+`,
  'giu',
);

/**
 * U+0345 COMBINING GREEK YPOGEGRAMMENI is a mark whose case variants are letters (ι, Ι). Under
 * IGNORECASE the `regex` module matches it neither as `[\p{L}]` nor as `[^\s\p{L}\p{N}]`, so
 * findall skips it like whitespace, splitting the text there. JavaScript's /iu counts it as a
 * letter; turning it into a space reproduces Python's pieces. It is the only assigned character
 * (Unicode 14) on which the two engines disagree for this pattern.
 */
const UNMATCHED_UNDER_IGNORECASE = /\u0345/g;

/** `regex.findall(split_regex, cleaned)`: the pieces that BPE encodes one by one. */
export function splitPieces(cleaned: string): string[] {
  return splittable(cleaned).match(SPLIT_RE) ?? [];
}

function splittable(cleaned: string): string {
  return cleaned.includes('\u0345') ? cleaned.replace(UNMATCHED_UNDER_IGNORECASE, ' ') : cleaned;
}

/** The pieces of splitPieces one at a time, so a caller that needs only the first few stops early. */
export function* iteratePieces(cleaned: string): Generator<string> {
  const re = new RegExp(SPLIT_RE.source, SPLIT_RE.flags);
  const text = splittable(cleaned);
  for (let m = re.exec(text); m !== null; m = re.exec(text)) yield m[0];
}
