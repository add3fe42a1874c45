/**
 * A synthetic icon set with captions, rendered with sharp: every shape × colour × background
 * ("a red star on a white background"). Small models learn it in a few adapter epochs, which makes
 * it an eval set where retrieval figures mean something (the fine-tune tests, the int8 accuracy
 * report).
 */
import sharp from 'sharp';

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'cross'] as const;
export const COLOURS: Record<string, string> = {
  red: '#e6194b',
  green: '#3cb44b',
  blue: '#4363d8',
  yellow: '#ffe119',
  purple: '#911eb4',
  orange: '#f58231',
};
export const BACKGROUNDS: Record<string, string> = {
  white: '#ffffff',
  black: '#000000',
  grey: '#808080',
  pink: '#fabed4',
  teal: '#469990',
};

/** Sizes and horizontal positions of the extended set (`iconVariantDataset`): radius and centre as
 *  fractions of the icon. The plain set draws every shape at radius 0.34 in the centre. */
export const SIZES: Record<string, number> = { small: 0.18, large: 0.3 };
export const POSITIONS: Record<string, number> = { 'at the left': 0.32, 'in the centre': 0.5, 'at the right': 0.68 };

function shapeSvg(shape: string, fill: string, s: number, radius = 0.34, centre = 0.5): string {
  const cx = s * centre;
  const cy = s / 2;
  const r = s * radius;
  switch (shape) {
    case 'circle':
      return `<circle cx="${cx}" cy="${cy}" r="${r}" fill="${fill}"/>`;
    case 'square':
      return `<rect x="${cx - r}" y="${cy - r}" width="${2 * r}" height="${2 * r}" fill="${fill}"/>`;
    case 'triangle':
      return `<polygon points="${cx},${cy - r} ${cx + r},${cy + r} ${cx - r},${cy + r}" fill="${fill}"/>`;
    case 'star': {
      const pts: string[] = [];
      for (let i = 0; i < 10; i++) {
        const a = (Math.PI / 5) * i - Math.PI / 2;
        const rr = i % 2 ? r * 0.45 : r;
        pts.push(`${(cx + rr * Math.cos(a)).toFixed(2)},${(cy + rr * Math.sin(a)).toFixed(2)}`);
      }
      return `<polygon points="${pts.join(' ')}" fill="${fill}"/>`;
    }
    case 'cross':
      return `<rect x="${cx - r}" y="${cy - r / 3}" width="${2 * r}" height="${(2 * r) / 3}" fill="${fill}"/><rect x="${cx - r / 3}" y="${cy - r}" width="${(2 * r) / 3}" height="${2 * r}" fill="${fill}"/>`;
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

export async function renderIcon(
  shape: string,
  colour: string,
  background: string,
  size = 64,
  place: { radius?: number; centre?: number } = {},
): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}"><rect width="${size}" height="${size}" fill="${BACKGROUNDS[background]}"/>${shapeSvg(shape, COLOURS[colour], size, place.radius, place.centre)}</svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** Every shape × colour × background once (150 pairs), in a fixed order. */
export async function iconDataset(size = 64): Promise<{ image: Buffer; caption: string }[]> {
  const out: { image: Buffer; caption: string }[] = [];
  for (const shape of SHAPES) {
    for (const colour of Object.keys(COLOURS)) {
      for (const bg of Object.keys(BACKGROUNDS))
        out.push({
          image: await renderIcon(shape, colour, bg, size),
          caption: `a ${colour} ${shape} on a ${bg} background`,
        });
    }
  }
  return out;
}

/**
 * The extended set: every shape × colour × background × size × position once (900 pairs, fixed
 * order), "a small red star at the left on a white background". Large enough to hold out several
 * hundred pairs from fine-tuning and still evaluate on captions that differ in one word.
 */
export async function iconVariantDataset(size = 64): Promise<{ image: Buffer; caption: string }[]> {
  const out: { image: Buffer; caption: string }[] = [];
  for (const shape of SHAPES) {
    for (const colour of Object.keys(COLOURS)) {
      for (const bg of Object.keys(BACKGROUNDS)) {
        for (const [sizeName, radius] of Object.entries(SIZES)) {
          for (const [where, centre] of Object.entries(POSITIONS)) {
            out.push({
              image: await renderIcon(shape, colour, bg, size, { radius, centre }),
              caption: `a ${sizeName} ${colour} ${shape} ${where} on a ${bg} background`,
            });
          }
        }
      }
    }
  }
  return out;
}
