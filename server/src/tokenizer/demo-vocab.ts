/**
 * A small, deterministic BPE vocabulary the project builds itself, for the random demo model
 * when no real CLIP vocabulary is available. Merges are learned from a built-in corpus of
 * icon/photo-caption-like text, pre-tokenized exactly as the tokenizer does (clean + split +
 * byte-level symbols with `</w>`), so encoding with it runs the same code path as the real one.
 * Its ids: 256 bytes, 256 bytes + </w>, DEMO_MERGE_COUNT merges, then sot and eot (the last two).
 */
import { BYTE_CHARS_IN_VOCAB_ORDER, BYTE_TO_VOCAB_INDEX } from './byte-encoder';
import { END_OF_WORD } from './bpe';
import { cleanText, splitPieces } from './clean';
import { seededRandom } from '../util/random';

/** Number of merges learned (the corpus below supports more; this fixes the vocabulary size). */
export const DEMO_MERGE_COUNT = 1500;
/** 512 byte tokens + merges + sot + eot. */
export const DEMO_VOCAB_SIZE = 512 + DEMO_MERGE_COUNT + 2;

const SUBJECTS = [
  'cat', 'dog', 'puppy', 'kitten', 'horse', 'bird', 'parrot', 'owl', 'fish', 'shark', 'whale', 'dolphin', 'lion',
  'tiger', 'bear', 'panda', 'fox', 'wolf', 'rabbit', 'mouse', 'elephant', 'giraffe', 'zebra', 'monkey', 'butterfly',
  'bee', 'spider', 'snake', 'turtle', 'frog', 'duck', 'chicken', 'cow', 'sheep', 'pig', 'goat', 'deer', 'squirrel',
  'man', 'woman', 'child', 'boy', 'girl', 'baby', 'person', 'people', 'family', 'couple', 'chef', 'doctor', 'teacher',
  'car', 'truck', 'bus', 'bicycle', 'motorcycle', 'train', 'airplane', 'boat', 'ship', 'rocket', 'tractor', 'taxi',
  'house', 'building', 'bridge', 'tower', 'castle', 'church', 'lighthouse', 'barn', 'cabin', 'skyscraper', 'tent',
  'tree', 'flower', 'rose', 'sunflower', 'tulip', 'cactus', 'leaf', 'forest', 'mountain', 'river', 'lake', 'beach',
  'island', 'desert', 'waterfall', 'volcano', 'garden', 'field', 'meadow', 'sunset', 'sunrise', 'rainbow', 'cloud',
  'apple', 'banana', 'orange', 'lemon', 'strawberry', 'cherry', 'grapes', 'pizza', 'burger', 'sandwich', 'cake',
  'cookie', 'bread', 'coffee', 'tea', 'cup', 'mug', 'bottle', 'glass', 'plate', 'bowl', 'spoon', 'fork', 'knife',
  'chair', 'table', 'sofa', 'bed', 'lamp', 'clock', 'window', 'door', 'key', 'lock', 'book', 'pencil', 'pen',
  'laptop', 'computer', 'phone', 'camera', 'keyboard', 'headphones', 'television', 'guitar', 'piano', 'drum',
  'violin', 'ball', 'football', 'basketball', 'tennis', 'racket', 'kite', 'balloon', 'umbrella', 'hat', 'shoe',
  'shirt', 'dress', 'jacket', 'bag', 'backpack', 'watch', 'ring', 'necklace', 'glasses', 'crown', 'star', 'moon',
  'sun', 'planet', 'heart', 'arrow', 'circle', 'square', 'triangle', 'diamond', 'shield', 'flag', 'map', 'globe',
  'envelope', 'gear', 'bell', 'trophy', 'gift', 'candle', 'robot', 'dragon', 'unicorn', 'ghost', 'skull', 'anchor',
  'house plant', 'coffee cup', 'shopping cart', 'light bulb', 'paper plane', 'music note', 'magnifying glass',
  'trash can', 'calendar', 'battery', 'cloud upload', 'download button', 'search bar', 'settings menu', 'user profile',
];
const ADJECTIVES = [
  'small', 'large', 'big', 'tiny', 'old', 'new', 'young', 'happy', 'sleepy', 'cute', 'fluffy', 'shiny', 'rusty',
  'wooden', 'metal', 'glass', 'plastic', 'vintage', 'modern', 'ancient', 'broken', 'empty', 'full', 'wet', 'dry',
  'bright', 'dark', 'colorful', 'striped', 'spotted', 'smiling', 'running', 'flying', 'sitting', 'standing',
  'sleeping', 'floating', 'frozen', 'burning', 'glowing', 'minimal', 'flat', 'simple', 'detailed', 'abstract',
  'beautiful', 'famous', 'busy', 'quiet', 'crowded', 'lonely', 'giant', 'little', 'round', 'tall', 'short',
];
const COLORS = [
  'red', 'blue', 'green', 'yellow', 'orange', 'purple', 'pink', 'black', 'white', 'gray', 'brown', 'gold',
  'silver', 'teal', 'navy', 'beige', 'turquoise', 'magenta', 'pastel', 'neon',
];
const SCENES = [
  'on a white background', 'on a black background', 'in the snow', 'in the rain', 'at night', 'at sunset',
  'on the beach', 'in a forest', 'in the city', 'on a table', 'on the grass', 'under a tree', 'in a kitchen',
  'in a living room', 'on the street', 'in the sky', 'under water', 'in a field', 'next to a window',
  'in front of a building', 'on a mountain', 'by the lake', 'in the park', 'at the market', 'in a museum',
];
const MEDIA = [
  'a photo of', 'a close-up photo of', 'a blurry photo of', 'a black and white photo of', 'an icon of',
  'a flat icon of', 'a line icon of', 'an illustration of', 'a drawing of', 'a sketch of', 'a painting of',
  'a watercolor painting of', 'a cartoon of', 'a 3d render of', 'a logo with', 'a sticker of', 'a pixel art',
  'a low poly', 'a vector graphic of', 'an emoji of', 'a screenshot of', 'a photograph showing', 'a picture of',
];
const VERBS = [
  'playing with', 'looking at', 'sitting next to', 'holding', 'eating', 'carrying', 'chasing', 'riding',
  'standing near', 'walking past', 'jumping over', 'sleeping on', 'hiding behind', 'reaching for',
];
const EXTRAS = [
  'high quality', '4k', 'hd', 'stock photo', 'royalty free', 'isolated', 'top view', 'side view', 'front view',
  'studio lighting', 'soft light', 'shallow depth of field', 'trending', 'award winning', "it's", "don't", "we're",
  "they've", "i'm", "you'll", "he'd", '2024', '1080p', '#nature', '@home', '100%', '$9.99', 'no. 1', '(new)', 'v2.0',
  'e-mail', 'wi-fi', 'u.s.', 'etc.', '&', 'café', 'naïve', 'über', 'jalapeño', 'résumé', 'crème brûlée',
];

const COMMON_WORDS = [
  'with', 'without', 'from', 'into', 'over', 'under', 'between', 'through', 'around', 'behind', 'above', 'below',
  'beside', 'inside', 'outside', 'near', 'along', 'across', 'during', 'after', 'before', 'while', 'their', 'there',
  'this', 'that', 'these', 'those', 'some', 'many', 'several', 'every', 'other', 'another', 'group', 'pair', 'set',
  'collection', 'pattern', 'texture', 'surface', 'background', 'foreground', 'shadow', 'reflection', 'light',
  'color', 'shape', 'line', 'edge', 'corner', 'center', 'middle', 'left', 'right', 'top', 'bottom', 'side',
  'morning', 'evening', 'winter', 'summer', 'spring', 'autumn', 'weather', 'storm', 'snowflake', 'lightning',
  'ocean', 'wave', 'stone', 'rock', 'sand', 'grass', 'wood', 'paper', 'fabric', 'leather', 'marble', 'concrete',
  'kitchen', 'bedroom', 'bathroom', 'office', 'classroom', 'library', 'restaurant', 'airport', 'station',
  'hospital', 'stadium', 'theater', 'village', 'country', 'street', 'road', 'highway', 'parking', 'harbor',
  'wedding', 'birthday', 'party', 'concert', 'festival', 'holiday', 'christmas', 'halloween', 'vacation',
  'cooking', 'reading', 'writing', 'painting', 'dancing', 'singing', 'swimming', 'climbing', 'skiing', 'surfing',
  'cycling', 'hiking', 'camping', 'fishing', 'shopping', 'working', 'learning', 'smiling', 'laughing', 'waving',
  'vegetable', 'tomato', 'potato', 'carrot', 'onion', 'pepper', 'mushroom', 'salad', 'soup', 'noodles', 'rice',
  'chocolate', 'icecream', 'cheese', 'butter', 'honey', 'juice', 'water', 'milk', 'wine', 'beer', 'breakfast',
  'dinner', 'lunch', 'dessert', 'blueberry', 'pineapple', 'watermelon', 'avocado', 'coconut', 'peach', 'pear',
  'alphabet', 'number', 'letter', 'word', 'sign', 'symbol', 'label', 'button', 'screen', 'display', 'website',
  'document', 'folder', 'picture', 'image', 'gallery', 'portrait', 'landscape', 'panorama', 'silhouette',
  'architecture', 'interior', 'exterior', 'furniture', 'decoration', 'ornament', 'jewelry', 'fashion', 'costume',
  'uniform', 'sweater', 'scarf', 'gloves', 'boots', 'sneakers', 'sunglasses', 'helmet', 'mask', 'wallet',
];

/** Caption-like sentences built from the word lists above with a fixed seed. */
export function demoCorpus(count = 6000): string[] {
  const rnd = seededRandom(0xc11b5eed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const templates: (() => string)[] = [
    () => `${pick(MEDIA)} a ${pick(ADJECTIVES)} ${pick(SUBJECTS)}`,
    () => `${pick(MEDIA)} a ${pick(COLORS)} ${pick(SUBJECTS)} ${pick(SCENES)}`,
    () => `a ${pick(ADJECTIVES)} ${pick(COLORS)} ${pick(SUBJECTS)} ${pick(VERBS)} a ${pick(SUBJECTS)}`,
    () => `${pick(SUBJECTS)} ${pick(SCENES)}, ${pick(EXTRAS)}`,
    () => `the ${pick(SUBJECTS)} is ${pick(COLORS)} and ${pick(ADJECTIVES)}`,
    () => `${pick(COLORS)} ${pick(SUBJECTS)} icon`,
    () => `two ${pick(SUBJECTS)}s ${pick(SCENES)}`,
    () => `${pick(MEDIA)} ${pick(SUBJECTS)} and ${pick(SUBJECTS)}, ${pick(EXTRAS)}, ${pick(EXTRAS)}`,
    () => `${pick(SUBJECTS)} ${pick(COMMON_WORDS)} ${pick(COMMON_WORDS)} ${pick(SUBJECTS)}`,
    () => `${pick(COMMON_WORDS)} ${pick(ADJECTIVES)} ${pick(COMMON_WORDS)} ${pick(SCENES)}`,
  ];
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(pick(templates)());
  return out;
}

/**
 * Sentences dressed up the way real captions are: sentence case, a trailing period here and
 * there, typographic quotes, a hashtag with a number.
 */
export function dressCaptions(sentences: readonly string[]): string[] {
  return sentences.map((c, i) => {
    let s = c.charAt(0).toUpperCase() + c.slice(1);
    if (i % 3 === 0) s += '.';
    if (i % 17 === 0) s = `\u201c${s}\u201d`;
    if (i % 29 === 0) s += ` #${i}`;
    return s;
  });
}

interface WordEntry {
  symbols: string[];
  count: number;
}

/** Pre-tokenizes the corpus exactly as encoding does and counts byte-symbol words. */
function wordCounts(corpus: readonly string[]): WordEntry[] {
  const counts = new Map<string, number>();
  for (const text of corpus) {
    for (const piece of splitPieces(cleanText(text))) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  }
  // Sorted so learning never depends on Map insertion order.
  return [...counts.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([piece, count]) => {
      const bytes = Buffer.from(piece, 'utf8');
      const symbols = Array.from(bytes, (b) => BYTE_CHARS_IN_VOCAB_ORDER[BYTE_TO_VOCAB_INDEX[b]]);
      symbols[symbols.length - 1] += END_OF_WORD;
      return { symbols, count };
    });
}

/**
 * Classic BPE learning: repeatedly merge the most frequent adjacent pair (ties: the
 * lexicographically smallest "left right"), skipping pairs whose concatenation is already a
 * token so every id names a distinct string.
 */
export function learnMerges(corpus: readonly string[], mergeCount: number): string[] {
  const words = wordCounts(corpus);
  const tokens = new Set<string>();
  for (const ch of BYTE_CHARS_IN_VOCAB_ORDER) tokens.add(ch).add(ch + END_OF_WORD);
  const merges: string[] = [];
  while (merges.length < mergeCount) {
    const pairCounts = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const key = `${w.symbols[i]} ${w.symbols[i + 1]}`;
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + w.count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, count] of pairCounts) {
      if (tokens.has(key.replace(' ', ''))) continue;
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break; // every word is a single symbol: nothing left to learn
    const [left, right] = best.split(' ');
    merges.push(best);
    tokens.add(left + right);
    for (const w of words) {
      const s = w.symbols;
      if (s.length < 2) continue;
      const next: string[] = [];
      for (let i = 0; i < s.length; ) {
        if (i + 1 < s.length && s[i] === left && s[i + 1] === right) {
          next.push(left + right);
          i += 2;
        } else {
          next.push(s[i]);
          i += 1;
        }
      }
      w.symbols = next;
    }
  }
  return merges;
}

let demoMerges: readonly string[] | undefined;

/** The demo vocabulary's merge lines ("left right"); deterministic, computed once per process. */
export function buildDemoVocab(): string[] {
  if (demoMerges === undefined) {
    const merges = learnMerges(demoCorpus(), DEMO_MERGE_COUNT);
    if (merges.length !== DEMO_MERGE_COUNT) {
      throw new Error(`demo corpus yields only ${merges.length} merges, fewer than ${DEMO_MERGE_COUNT}`);
    }
    demoMerges = merges;
  }
  return [...demoMerges];
}
