/**
 * A synthetic icon set with captions, rendered with sharp: every shape × colour × background
 * ("a red star on a white background"). Small models learn it in a few adapter epochs, which makes
 * it an eval set where retrieval figures mean something (the fine-tune tests, the int8 accuracy
 * report).
 */
import sharp from 'sharp';

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'cross'] as const;
export const COLOURS: Record<string, string> = { red: '#e6194b', green: '#3cb44b', blue: '#4363d8', yellow: '#ffe119', purple: '#911eb4', orange: '#f58231' };
export const BACKGROUNDS: Record<string, string> = { white: '#ffffff', black: '#000000', grey: '#808080', pink: '#fabed4', teal: '#469990' };

function shapeSvg(shape: string, fill: string, s: number): string {
  const c = s / 2;
  const r = s * 0.34;
  switch (shape) {
    case 'circle':
      return `<circle cx="${c}" cy="${c}" r="${r}" fill="${fill}"/>`;
    case 'square':
      return `<rect x="${c - r}" y="${c - r}" width="${2 * r}" height="${2 * r}" fill="${fill}"/>`;
    case 'triangle':
      return `<polygon points="${c},${c - r} ${c + r},${c + r} ${c - r},${c + r}" fill="${fill}"/>`;
    case 'star': {
      const pts: string[] = [];
      for (let i = 0; i < 10; i++) {
        const a = (Math.PI / 5) * i - Math.PI / 2;
        const rr = i % 2 ? r * 0.45 : r;
        pts.push(`${(c + rr * Math.cos(a)).toFixed(2)},${(c + rr * Math.sin(a)).toFixed(2)}`);
      }
      return `<polygon points="${pts.join(' ')}" fill="${fill}"/>`;
    }
    case 'cross':
      return `<rect x="${c - r}" y="${c - r / 3}" width="${2 * r}" height="${(2 * r) / 3}" fill="${fill}"/><rect x="${c - r / 3}" y="${c - r}" width="${(2 * r) / 3}" height="${2 * r}" fill="${fill}"/>`;
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

export async function renderIcon(shape: string, colour: string, background: string, size = 64): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}"><rect width="${size}" height="${size}" fill="${BACKGROUNDS[background]}"/>${shapeSvg(shape, COLOURS[colour], size)}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** Every shape × colour × background once (150 pairs), in a fixed order. */
export async function iconDataset(size = 64): Promise<{ image: Buffer; caption: string }[]> {
  const out: { image: Buffer; caption: string }[] = [];
  for (const shape of SHAPES) {
    for (const colour of Object.keys(COLOURS)) {
      for (const bg of Object.keys(BACKGROUNDS)) out.push({ image: await renderIcon(shape, colour, bg, size), caption: `a ${colour} ${shape} on a ${bg} background` });
    }
  }
  return out;
}
