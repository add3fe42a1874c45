/** Plain-text tables for the console report: right-aligned numbers, left-aligned text. */

export type Cell = string | number | undefined;

function show(c: Cell): string {
  if (c === undefined) return '';
  if (typeof c === 'number') {
    if (!Number.isFinite(c)) return '-';
    if (Number.isInteger(c)) return String(c);
    const a = Math.abs(c);
    return a >= 1000 ? c.toFixed(0) : a >= 100 ? c.toFixed(1) : a >= 10 ? c.toFixed(2) : c.toFixed(3);
  }
  return c;
}

export function formatTable(title: string, header: string[], rows: Cell[][]): string {
  const cells = rows.map((r) => r.map(show));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.every((r) => r[i] === undefined || typeof r[i] === 'number'));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return (
    [`\n${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n') + '\n'
  );
}

/** The same table as GitHub markdown (docs/benchmarks.md). */
export function markdownTable(header: string[], rows: Cell[][]): string {
  return (
    [
      `| ${header.join(' | ')} |`,
      `|${header.map(() => '---').join('|')}|`,
      ...rows.map((r) => `| ${r.map(show).join(' | ')} |`),
    ].join('\n') + '\n'
  );
}
