/**
 * Seeded random weights with open_clip's initialisation (CLIP / VisionTransformer /
 * TextTransformer constructors and TextTransformer.init_parameters, plus PyTorch's module
 * defaults where open_clip leaves them):
 *
 *   text:   token_embedding ~ N(0, 0.02), positional_embedding ~ N(0, 0.01),
 *           in_proj_weight ~ N(0, w^-0.5), out_proj/c_proj ~ N(0, w^-0.5 (2L)^-0.5),
 *           c_fc ~ N(0, (2w)^-0.5), text_projection ~ N(0, w^-0.5)
 *   vision: class_embedding, positional_embedding, proj ~ w^-0.5 · N(0, 1); the blocks and conv1
 *           keep PyTorch defaults (open_clip's VisionTransformer.init_parameters is a no-op):
 *           in_proj_weight xavier_uniform, Linear/Conv weights kaiming_uniform(a=√5) = U(±1/√fan_in),
 *           Linear biases U(±1/√fan_in)
 *   both:   attention in_proj_bias / out_proj.bias 0, LayerNorm weight 1 and bias 0,
 *           logit_scale = ln(1/0.07)
 *
 * The PRNG is sfc32 seeded per tensor from (seed, key), so a tensor's values do not depend on the
 * order in which tensors are generated. These are not torch's random streams: the same seed gives
 * the same model in clipserve, not the same numbers as torch.manual_seed.
 */
import type { ModelConfig } from './config';
import { expectedWeightShapes } from './expected-weights';
import { numel, type StateDict } from './state-dict';

/** sfc32 (Chris Doty-Humphrey's Small Fast Counting generator): 128-bit state, passes PractRand. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | undefined;

  constructor(seed: number, stream = '') {
    // Seed the state with splitmix32 over the seed and an FNV-1a hash of the stream name.
    let h = 0x811c9dc5;
    for (let i = 0; i < stream.length; i++) h = Math.imul(h ^ stream.charCodeAt(i), 0x01000193) >>> 0;
    let s = (seed >>> 0) ^ Math.imul(h, 0x9e3779b1);
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Standard normal (Box–Muller, both values used). */
  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const u = 1 - this.uniform(); // (0, 1]: log stays finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

type Init = { kind: 'normal'; std: number } | { kind: 'uniform'; bound: number } | { kind: 'const'; value: number };

function initFor(key: string, shape: number[], cfg: ModelConfig): Init {
  const visual = key.startsWith('visual.');
  const leaf = key.replace(/^visual\./, '').replace(/^transformer\.resblocks\.\d+\./, '');
  const fanIn = shape.length > 1 ? numel(shape.slice(1)) : 0;
  if (/(^|\.)ln_\w+\.weight$/.test(key)) return { kind: 'const', value: 1 };
  if (/(^|\.)ln_\w+\.bias$/.test(key)) return { kind: 'const', value: 0 };
  if (key.endsWith('attn.in_proj_bias') || key.endsWith('attn.out_proj.bias')) return { kind: 'const', value: 0 };
  if (key === 'logit_scale') return { kind: 'const', value: Math.log(1 / 0.07) };
  if (visual) {
    const w = cfg.vision_cfg.width;
    if (key === 'visual.class_embedding' || key === 'visual.positional_embedding' || key === 'visual.proj')
      return { kind: 'normal', std: w ** -0.5 };
    if (key.endsWith('attn.in_proj_weight')) return { kind: 'uniform', bound: Math.sqrt(6 / (shape[0] + shape[1])) }; // xavier_uniform
    if (key.endsWith('.bias')) {
      // nn.Linear bias: U(±1/√fan_in) of its weight, whose fan_in is the layer's input width.
      const inWidth = key.endsWith('c_fc.bias') ? w : Math.trunc(w * cfg.vision_cfg.mlp_ratio);
      return { kind: 'uniform', bound: 1 / Math.sqrt(inWidth) };
    }
    return { kind: 'uniform', bound: 1 / Math.sqrt(fanIn) }; // kaiming_uniform(a=√5)
  }
  const w = cfg.text_cfg.width;
  const layers = cfg.text_cfg.layers;
  if (key === 'token_embedding.weight') return { kind: 'normal', std: 0.02 };
  if (key === 'positional_embedding') return { kind: 'normal', std: 0.01 };
  if (key === 'text_projection') return { kind: 'normal', std: w ** -0.5 };
  if (leaf === 'attn.in_proj_weight') return { kind: 'normal', std: w ** -0.5 };
  if (leaf === 'attn.out_proj.weight' || leaf === 'mlp.c_proj.weight')
    return { kind: 'normal', std: w ** -0.5 * (2 * layers) ** -0.5 };
  if (leaf === 'mlp.c_fc.weight') return { kind: 'normal', std: (2 * w) ** -0.5 };
  if (leaf === 'mlp.c_fc.bias') return { kind: 'uniform', bound: 1 / Math.sqrt(w) };
  if (leaf === 'mlp.c_proj.bias')
    return { kind: 'uniform', bound: 1 / Math.sqrt(Math.trunc(w * cfg.text_cfg.mlp_ratio)) };
  throw new Error(`no initialisation rule for ${key}`);
}

function fill(data: Float32Array, init: Init, rng: Rng): void {
  switch (init.kind) {
    case 'const':
      data.fill(init.value);
      return;
    case 'normal':
      for (let i = 0; i < data.length; i++) data[i] = rng.normal() * init.std;
      return;
    case 'uniform':
      for (let i = 0; i < data.length; i++) data[i] = (2 * rng.uniform() - 1) * init.bound;
      return;
  }
}

/**
 * A full state dict for `cfg` with seeded random weights. `onTensor` reports progress in
 * parameters, for the multi-second ViT-L/14 case.
 */
export function randomStateDict(
  cfg: ModelConfig,
  seed: number,
  onTensor?: (doneParams: number, totalParams: number) => void,
): StateDict {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new RangeError(`seed must be an integer in [0, 2^32), got ${seed}`);
  const shapes = expectedWeightShapes(cfg);
  let total = 0;
  for (const s of shapes.values()) total += numel(s);
  const sd: StateDict = new Map();
  let done = 0;
  for (const [key, shape] of shapes) {
    const data = new Float32Array(numel(shape));
    fill(data, initFor(key, shape, cfg), new Rng(seed, key));
    sd.set(key, { shape, data });
    done += data.length;
    onTensor?.(done, total);
  }
  return sd;
}
