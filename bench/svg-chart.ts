/**
 * A small dependency-free SVG line chart: series of (x, y) points on a log2 x axis (concurrency)
 * and a linear or log10 y axis, with ticks, a grid and a legend.
 */

export interface Series {
  label: string;
  points: Array<[number, number]>;
  dashed?: boolean;
}

export interface Panel {
  title: string;
  yLabel: string;
  yLog?: boolean;
  series: Series[];
}

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1000) return `${+(v / 1000).toFixed(1)}k`;
  if (a >= 10) return String(Math.round(v));
  if (a >= 1) return String(+v.toFixed(1));
  return String(+v.toPrecision(2));
}

/** "Nice" linear ticks from 0 to at least max. */
function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const ticks: number[] = [];
  for (let e = lo; e <= hi; e++) ticks.push(10 ** e);
  return ticks;
}

function panelSvg(p: Panel, ox: number, oy: number, w: number, h: number): string {
  const m = { l: 62, r: 16, t: 28, b: 40 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const pts = p.series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && Number.isFinite(y) && (!p.yLog || y > 0));
  const xs = pts.map(([x]) => x);
  const ys = pts.map(([, y]) => y);
  const xMin = Math.min(...xs, 1);
  const xMax = Math.max(...xs, 2);
  const lx0 = Math.log2(xMin);
  const lx1 = Math.log2(xMax) === lx0 ? lx0 + 1 : Math.log2(xMax);
  const yTicks = p.yLog ? logTicks(Math.min(...ys, 1), Math.max(...ys, 10)) : linearTicks(Math.max(...ys, 0));
  const y0 = p.yLog ? Math.log10(yTicks[0]) : 0;
  const y1 = p.yLog ? Math.log10(yTicks[yTicks.length - 1]) : yTicks[yTicks.length - 1];
  const X = (x: number): number => ox + m.l + ((Math.log2(x) - lx0) / (lx1 - lx0)) * pw;
  const Y = (y: number): number => oy + m.t + ph - (((p.yLog ? Math.log10(y) : y) - y0) / (y1 - y0 || 1)) * ph;
  const out: string[] = [];
  out.push(
    `<text x="${ox + m.l + pw / 2}" y="${oy + 18}" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`,
  );
  for (const t of yTicks) {
    out.push(
      `<line x1="${ox + m.l}" x2="${ox + m.l + pw}" y1="${Y(t).toFixed(1)}" y2="${Y(t).toFixed(1)}" stroke="#e5e7eb"/>`,
    );
    out.push(`<text x="${ox + m.l - 6}" y="${(Y(t) + 4).toFixed(1)}" text-anchor="end">${fmt(t)}</text>`);
  }
  for (let e = Math.ceil(lx0); e <= Math.floor(lx1); e++) {
    const x = X(2 ** e);
    out.push(
      `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${oy + m.t}" y2="${oy + m.t + ph}" stroke="#f3f4f6"/>`,
    );
    out.push(`<text x="${x.toFixed(1)}" y="${oy + m.t + ph + 16}" text-anchor="middle">${2 ** e}</text>`);
  }
  out.push(`<rect x="${ox + m.l}" y="${oy + m.t}" width="${pw}" height="${ph}" fill="none" stroke="#9ca3af"/>`);
  out.push(`<text x="${ox + m.l + pw / 2}" y="${oy + h - 6}" text-anchor="middle">concurrent callers</text>`);
  out.push(
    `<text transform="translate(${ox + 14},${oy + m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(p.yLabel)}</text>`,
  );
  p.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const valid = s.points
      .filter(([x, y]) => x > 0 && Number.isFinite(y) && (!p.yLog || y > 0))
      .sort((a, b) => a[0] - b[0]);
    if (valid.length === 0) return;
    const d = valid.map(([x, y], j) => `${j ? 'L' : 'M'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    out.push(
      `<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    for (const [x, y] of valid)
      out.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = oy + m.t + 8 + i * 16;
    out.push(
      `<line x1="${ox + m.l + 10}" x2="${ox + m.l + 30}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(`<text x="${ox + m.l + 36}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  return out.join('\n');
}

/** Panels laid out in rows of `columns`. */
export function renderChart(title: string, panels: Panel[], columns = 2): string {
  const w = 520;
  const h = 330;
  const rows = Math.max(1, Math.ceil(panels.length / columns));
  const W = w * Math.min(columns, Math.max(1, panels.length));
  const H = h * rows + 34;
  const body = panels.map((p, i) => panelSvg(p, (i % columns) * w, 34 + Math.floor(i / columns) * h, w, h)).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>
${body}
</svg>
`;
}
