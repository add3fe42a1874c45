/**
 * Python's `html.unescape` (CPython 3.11 `html/__init__.py`), which follows the HTML5 rules:
 * named references with and without ';' (legacy names only), longest-prefix matching for
 * unterminated names (`&notit;` → `¬it;`), numeric references with the Windows-1252 remap of
 * 0x80–0x9F, U+FFFD for NUL, surrogates and out-of-range values, and removal of the code points
 * HTML forbids.
 */
import { HTML5_ENTITIES } from './ftfy/tables.generated';

const ENTITIES: ReadonlyMap<string, string> = new Map(Object.entries(HTML5_ENTITIES));

/** Numeric references HTML5 reinterprets (html._invalid_charrefs). */
const INVALID_CHARREFS: ReadonlyMap<number, string> = new Map([
  [0x00, '\ufffd'],
  [0x0d, '\r'],
  [0x80, '\u20ac'],
  [0x81, '\x81'],
  [0x82, '\u201a'],
  [0x83, '\u0192'],
  [0x84, '\u201e'],
  [0x85, '\u2026'],
  [0x86, '\u2020'],
  [0x87, '\u2021'],
  [0x88, '\u02c6'],
  [0x89, '\u2030'],
  [0x8a, '\u0160'],
  [0x8b, '\u2039'],
  [0x8c, '\u0152'],
  [0x8d, '\x8d'],
  [0x8e, '\u017d'],
  [0x8f, '\x8f'],
  [0x90, '\x90'],
  [0x91, '\u2018'],
  [0x92, '\u2019'],
  [0x93, '\u201c'],
  [0x94, '\u201d'],
  [0x95, '\u2022'],
  [0x96, '\u2013'],
  [0x97, '\u2014'],
  [0x98, '\u02dc'],
  [0x99, '\u2122'],
  [0x9a, '\u0161'],
  [0x9b, '\u203a'],
  [0x9c, '\u0153'],
  [0x9d, '\x9d'],
  [0x9e, '\u017e'],
  [0x9f, '\u0178'],
]);

/** Code points a numeric reference may not produce; Python drops them (html._invalid_codepoints). */
function isInvalidCodepoint(cp: number): boolean {
  return (
    (cp >= 0x1 && cp <= 0x8) ||
    cp === 0xb ||
    (cp >= 0xe && cp <= 0x1f) ||
    (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp & 0xfffe) === 0xfffe
  );
}

// Python: r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)'. The `u` flag makes the
// 32-character limit count code points, as Python does.
const CHARREF_RE = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function numericValue(digits: string, radix: number): number {
  // Anything longer than 8 significant digits is far above 0x10FFFF; avoid precision games.
  const trimmed = digits.replace(/^0+/, '');
  if (trimmed.length > 8) return Number.POSITIVE_INFINITY;
  return trimmed === '' ? 0 : parseInt(trimmed, radix);
}

function replaceCharref(ref: string): string {
  if (ref[0] === '#') {
    const hex = ref[1] === 'x' || ref[1] === 'X';
    const body = ref.slice(hex ? 2 : 1).replace(/;$/, '');
    const num = numericValue(body, hex ? 16 : 10);
    const remapped = INVALID_CHARREFS.get(num);
    if (remapped !== undefined) return remapped;
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
    if (isInvalidCodepoint(num)) return '';
    return String.fromCodePoint(num);
  }
  const exact = ENTITIES.get(ref);
  if (exact !== undefined) return exact;
  // Longest prefix that is a name (only legacy names work without ';'), at least 2 code points.
  const cps = Array.from(ref);
  for (let x = cps.length - 1; x > 1; x--) {
    const prefix = cps.slice(0, x).join('');
    const value = ENTITIES.get(prefix);
    if (value !== undefined) return value + cps.slice(x).join('');
  }
  return '&' + ref;
}

/** Python `html.unescape(s)`. */
export function htmlUnescape(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(CHARREF_RE, (_m, ref: string) => replaceCharref(ref));
}
