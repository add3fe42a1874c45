/**
 * ftfy 6.3.1 fix_text and Python html.unescape, against outputs of the real libraries
 * (ftfy 6.3.1 / CPython 3.11). These complement the golden tokenizer cases with one example per
 * fixer path: mojibake in several code pages, restore_byte_a0, lossy sequences, CESU-8,
 * inconsistent UTF-8, the '<' rule across lines, and the remaining character fixes.
 */
import { fixText, htmlUnescape } from '../../../server/src/tokenizer';
import { badness, isBad } from '../../../server/src/tokenizer/ftfy';
import { splitPieces } from '../../../server/src/tokenizer/clean';
import { pyJoinSplit, pyLower, pyStrip } from '../../../server/src/tokenizer/python-str';

const FTFY_CASES: [string, string][] = [
  ['u\u00cc\u02c6nicode', '\u00fcnicode'],
  ['This \u00e2\u20ac\u201d should be an em dash', 'This \u2014 should be an em dash'],
  ['This text is sad .\u00e2\u0081\u201d.', 'This text is sad .\u2054.'],
  ['\u00c3\u00a0\u00c2\u00b2\u00c2\u00a0_\u00c3\u00a0\u00c2\u00b2\u00c2\u00a0', '\u0ca0_\u0ca0'],
  ['not such a fan of Charlotte Bront\u00eb\u2026\u201d', 'not such a fan of Charlotte Bront\u00eb\u2026"'],
  ['AH\u00c5\u2122, the new sofa from IKEA\u00ae', 'AH\u00c5\u2122, the new sofa from IKEA\u00ae'],
  ['This text was never UTF-8 at all\u0085', 'This text was never UTF-8 at all\u2026'],
  ['\u00c3\u00banico', '\u00fanico'],
  ['voil\u00c3  le travail', 'voil\u00e0 le travail'],
  ['\u00c3  quele', '\u00e0 quele'],
  ['\u00d0\u00bf\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a', '\u043f\u0440\u0438\u0432\u0435\u0442'],
  [
    '\u0420\u0491\u0420\u0455\u0420\u00b1\u0421\u0402\u0420\u0455',
    '\u0420\u0491\u0420\u0455\u0420\u00b1\u0421\u0402\u0420\u0455',
  ],
  ['\u00c3\u00a2\u00e2\u201a\u00ac\u00c5\u201cmismatched quotes\u00e2\u20ac\u009d', '"mismatched quotes"'],
  ['caf\u00c3\u00a9 and na\u00c3\u00afve \ud83d\ude00 caf\u00e9', 'caf\u00e9 and na\u00efve \ud83d\ude00 caf\u00e9'],
  ['\u00c3\u0083\u00c2\u00a9', '\u00e9'],
  ['Lorem ipsum \u00e2\u20ac\u00a6 dolor\ufffd', 'Lorem ipsum \u2026 dolor\ufffd'],
  ['\u00ed\u00a0\u00bd\u00ed\u00b8\u0080', '\ud83d\ude00'],
  ['&NTILDE;o&ntilde;o &AMP; &notit; &#x92; &#0; &#128512;', "\u00d1o\u00f1o & &notit; ' \ufffd \ud83d\ude00"],
  ['&lt;b&gt; bold\n<i>x</i> &amp;\n&amp; later', '<b> bold\n<i>x</i> &amp;\n&amp; later'],
  ["\u001b[36;44mI'm blue\u001b[0m, da ba dee", "I'm blue, da ba dee"],
  [
    '\ufb01ne \ufb02ow \u0132ssel \u01c5emal \uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff76\uff80\uff76\uff85\u3000space',
    'fine flow IJssel D\u017eemal fullwidth \u30ab\u30bf\u30ab\u30ca space',
  ],
  ['\u2018single\u2019 \u201cdouble\u201d \u02bcapostrophe', "'single' \"double\" 'apostrophe"],
  ['line\r\nbreak\rand\u2028sep\u2029para\u0085next', 'line\nbreak\nand\nsep\npara\u2026next'],
  ['zero\u200bwidth\ufeffbom\u0000nul\u007fdel\u206aformat', 'zero\u200bwidthbomnuldelformat'],
  ['\u221a\u00b1o \u221a\u2202 and \u201a\u00c4\u00a2 bullet', '\u00f1o \u00f6 and \u2022 bullet'],
  ['\u00d7\u00b2', '\u05f2'],
  ['\u00c3\u00a9\u00c3\u00a9\u00c3\u00a9 ok', '\u00e9\u00e9\u00e9 ok'],
  ['\u00c2\u0141100 and \u0100\u20ac', '\u00c2\u0141100 and \u0100\u20ac'],
  ['\u03b2\u20ac\u2122 greek', "' greek"],
  ['s\u00c3\u00a3o paulo \u00e2\u20ac\u201c brasil', 's\u00e3o paulo \u2013 brasil'],
  ['\ud83d\ude00 lone \ud800 surrogate', '\ud83d\ude00 lone \ufffd surrogate'],
  [
    '\u00d0\u00af \u00d0\u00bb\u00d1\u017d\u00d0\u00b1\u00d0\u00bb\u00d1\u017d',
    '\u042f \u043b\u044e\u0431\u043b\u044e',
  ],
  ['\u00e3\u0192\u00e3\u201a\u00af\u00e3\u0192\u02c6', "\u00e3\u0192\u00e3'\u00af\u00e3\u0192\u02c6"],
];

const UNESCAPE_CASES: [string, string][] = [
  ['&copy 2024', '\u00a9 2024'],
  ['&notit;', '\u00acit;'],
  ['&notin;', '\u2209'],
  ['&amp;amp;', '&amp;'],
  ['&#128;', '\u20ac'],
  ['&#x81;', '\u0081'],
  ['&#0;', '\ufffd'],
  ['&#xD800;', '\ufffd'],
  ['&#x110000;', '\ufffd'],
  ['&#1;x', 'x'],
  ['&#65&#x42;', 'AB'],
  ['&eacute&Eacute;', '\u00e9\u00c9'],
  ['&AMP &AMPx', '& &x'],
  ['&ZeroWidthSpace;', '\u200b'],
  ['&#99999999999999999999;', '\ufffd'],
  ['&nosuch;', '&nosuch;'],
  ['&;', '&;'],
  ['& amp;', '& amp;'],
  ['&lt&gt', '<>'],
  ['&#x;', '&#x;'],
  ['&#13;', '\r'],
  ['&fjlig;', 'fj'],
  ['&acE;', '\u223e\u0333'],
];

describe('ftfy fix_text port', () => {
  it.each(FTFY_CASES)('fix_text(%j)', (input, expected) => {
    expect(fixText(input)).toBe(expected);
  });

  it('is idempotent on its own output and leaves plain text alone', () => {
    for (const [, fixed] of FTFY_CASES) expect(fixText(fixed)).toBe(fixed);
    expect(fixText('')).toBe('');
    expect(fixText('A plain ASCII caption, 100% fine!\n')).toBe('A plain ASCII caption, 100% fine!\n');
  });

  it('scores mojibake as bad and clean text as fine', () => {
    expect(isBad('This \u00e2\u20ac\u201d should')).toBe(true);
    expect(badness('\u00c3\u00a9\u00c3\u00a9')).toBeGreaterThan(0);
    expect(isBad('na\u00efve caf\u00e9 \u2014 \u201cquoted\u201d')).toBe(false);
  });
});

describe('Python html.unescape port', () => {
  it.each(UNESCAPE_CASES)('html.unescape(%j)', (input, expected) => {
    expect(htmlUnescape(input)).toBe(expected);
  });
});

describe('Python str helpers', () => {
  it('split/strip use Python whitespace (U+001C-U+001F and U+0085 yes, U+FEFF no)', () => {
    expect(pyJoinSplit('\u001c a\u0085b \u3000 c\u00a0')).toBe('a b c');
    expect(pyStrip('\ufeff x \ufeff')).toBe('\ufeff x \ufeff');
    expect(pyStrip('\t\n x \u2029')).toBe('x');
  });

  it('lower-cases like str.lower (final sigma, dotted I)', () => {
    expect(pyLower('\u039f\u0394\u039f\u03a3')).toBe('\u03bf\u03b4\u03bf\u03c2');
    expect(pyLower('\u0130')).toBe('i\u0307');
  });
});

describe('split regex (Python regex module, IGNORECASE)', () => {
  it('matches the regex module on its edge cases', () => {
    // Outputs of regex.findall(split_regex, s, IGNORECASE) in Python.
    expect(splitPieces('a\u0345b')).toEqual(['a', 'b']);
    expect(splitPieces('.\u0345.')).toEqual(['.', '.']);
    expect(splitPieces("'\u017f")).toEqual(["'\u017f"]);
    expect(splitPieces('a\u001c.')).toEqual(['a', '\u001c.']);
    expect(splitPieces("don't 2024 \u2160x \ud835\udd04\ud835\udd05")).toEqual([
      'don',
      "'t",
      '2',
      '0',
      '2',
      '4',
      '\u2160',
      'x',
      '\ud835\udd04\ud835\udd05',
    ]);
    expect(splitPieces('a<start_of_text>b<end_of_text>')).toEqual(['a', '<start_of_text>', 'b', '<end_of_text>']);
  });
});
