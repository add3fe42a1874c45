/**
 * Python `str` behaviours that JavaScript spells differently, for matching OpenCLIP's Python
 * reference exactly.
 */

/**
 * Regex character-class body for Python's `str.isspace()` / `re` `\s` on str patterns. Unlike
 * JavaScript's `\s` it includes U+001C–U+001F and U+0085, and excludes U+FEFF.
 */
export const PY_SPACE_CLASS =
  '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Python `re` `\w` on str patterns: letters, numbers (any kind) and '_'. Needs the `u` flag. */
export const PY_WORD_CLASS = '\\p{L}\\p{N}_';

const SPACE_RUNS = new RegExp(`[${PY_SPACE_CLASS}]+`, 'gu');
const LEADING_SPACE = new RegExp(`^[${PY_SPACE_CLASS}]+`, 'u');
const TRAILING_SPACE = new RegExp(`[${PY_SPACE_CLASS}]+$`, 'u');

/** Python `s.strip()` with no argument. */
export function pyStrip(s: string): string {
  return s.replace(LEADING_SPACE, '').replace(TRAILING_SPACE, '');
}

/** Python `" ".join(s.split())`: runs of whitespace collapse to one space, ends trimmed. */
export function pyJoinSplit(s: string): string {
  return pyStrip(s).replace(SPACE_RUNS, ' ');
}

/**
 * Python `str.lower()`: full Unicode lower-casing, including final sigma and İ → i̇.
 * V8's toLowerCase implements the same SpecialCasing rules (unconditional mappings plus the
 * Final_Sigma context), so it is used directly.
 */
export function pyLower(s: string): string {
  return s.toLowerCase();
}
