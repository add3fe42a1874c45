// Prettier settings chosen to match the code as it was written by hand: of the candidates tried
// (printWidth 100/110/120, trailing commas all/es5/none, arrowParens always/avoid, single/double
// quotes, bracket spacing), this one rewrites the fewest existing lines. 120 columns is the widest
// of the widths compared; wider still would change fewer lines but makes side-by-side diffs wrap.
/** @type {import('prettier').Config} */
export default {
  printWidth: 120,
  singleQuote: true,
  trailingComma: 'all',
  arrowParens: 'always',
};
