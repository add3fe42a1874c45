/**
 * OpenCLIP's `clean='lower'` text cleaning and its split regex.
 *
 *   ftfy.fix_text → html.unescape(html.unescape(.)) → strip → " ".join(split()) → strip → lower
 */
import { fixText } from './ftfy';
import { htmlUnescape } from './html-unescape';
import { PY_SPACE_CLASS, pyJoinSplit, pyLower, pyStrip } from './python-str';

export function cleanText(text: string): string {
  let t = fixText(text);
  t = htmlUnescape(htmlUnescape(t));
  t = pyStrip(t);
  t = pyJoinSplit(t);
  t = pyStrip(t);
  return pyLower(t);
}

/**
 * The split regex (Python `regex` module, IGNORECASE):
 *   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * With the `u` flag astral characters count as one code point, and `i` gives the same simple
 * case folding (so `'ſ` still matches `'s`). `\s` is spelled out as Python's whitespace set.
 */
export const SPLIT_RE = new RegExp(
  `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^${PY_SPACE_CLASS}\\p{L}\\p{N}]+`,
  'giu',
);

/** `regex.findall(split_regex, cleaned)`: the pieces that BPE encodes one by one. */
export function splitPieces(cleaned: string): string[] {
  return cleaned.match(SPLIT_RE) ?? [];
}
