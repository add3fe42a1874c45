/**
 * The open_clip state_dict keys and shapes that a config implies (plain ViT image tower, CLIP text
 * transformer), and the check that a state dict provides exactly those: every key present, with
 * its shape, so that a wrong checkpoint fails with a message naming the offending keys instead of
 * producing a broken graph.
 */
import type { ModelConfig } from './config';
import { BundleError } from './errors';
import type { StateDict } from './state-dict';

/** A state dict that does not fit the config (a BundleError: writeBundle cannot proceed). */
export class WeightsError extends BundleError {
  constructor(
    message: string,
    readonly missing: string[] = [],
    readonly misshaped: string[] = [],
  ) {
    super(message);
    this.name = 'WeightsError';
  }
}

function blockShapes(prefix: string, width: number, mlpRatio: number, out: Map<string, number[]>): void {
  const hidden = Math.trunc(width * mlpRatio); // open_clip: int(width * mlp_ratio)
  out.set(`${prefix}.ln_1.weight`, [width]);
  out.set(`${prefix}.ln_1.bias`, [width]);
  out.set(`${prefix}.attn.in_proj_weight`, [3 * width, width]);
  out.set(`${prefix}.attn.in_proj_bias`, [3 * width]);
  out.set(`${prefix}.attn.out_proj.weight`, [width, width]);
  out.set(`${prefix}.attn.out_proj.bias`, [width]);
  out.set(`${prefix}.ln_2.weight`, [width]);
  out.set(`${prefix}.ln_2.bias`, [width]);
  out.set(`${prefix}.mlp.c_fc.weight`, [hidden, width]);
  out.set(`${prefix}.mlp.c_fc.bias`, [hidden]);
  out.set(`${prefix}.mlp.c_proj.weight`, [width, hidden]);
  out.set(`${prefix}.mlp.c_proj.bias`, [width]);
}

/** Every key the towers read, with its shape, in open_clip's state_dict order. */
export function expectedWeightShapes(cfg: ModelConfig): Map<string, number[]> {
  const v = cfg.vision_cfg;
  const t = cfg.text_cfg;
  const grid = v.image_size / v.patch_size;
  const m = new Map<string, number[]>();
  m.set('positional_embedding', [t.context_length, t.width]);
  m.set('text_projection', [t.width, cfg.embed_dim]);
  m.set('logit_scale', []);
  m.set('visual.class_embedding', [v.width]);
  m.set('visual.positional_embedding', [grid * grid + 1, v.width]);
  m.set('visual.proj', [v.width, cfg.embed_dim]);
  m.set('visual.conv1.weight', [v.width, 3, v.patch_size, v.patch_size]);
  m.set('visual.ln_pre.weight', [v.width]);
  m.set('visual.ln_pre.bias', [v.width]);
  for (let i = 0; i < v.layers; i++) blockShapes(`visual.transformer.resblocks.${i}`, v.width, v.mlp_ratio, m);
  m.set('visual.ln_post.weight', [v.width]);
  m.set('visual.ln_post.bias', [v.width]);
  for (let i = 0; i < t.layers; i++) blockShapes(`transformer.resblocks.${i}`, t.width, t.mlp_ratio, m);
  m.set('token_embedding.weight', [t.vocab_size, t.width]);
  m.set('ln_final.weight', [t.width]);
  m.set('ln_final.bias', [t.width]);
  return m;
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);
const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

/**
 * Throws a WeightsError listing every missing or mis-shaped key. Keys the towers do not use
 * (e.g. open_clip's `attn_mask` buffer in old checkpoints) are ignored. A 1-element logit_scale
 * (`[1]`) is accepted as a scalar, as some exports store it that way.
 */
export function validateStateDict(sd: StateDict, cfg: ModelConfig): void {
  const missing: string[] = [];
  const misshaped: string[] = [];
  const details: string[] = [];
  for (const [key, shape] of expectedWeightShapes(cfg)) {
    const t = sd.get(key);
    if (!t) {
      missing.push(key);
      continue;
    }
    const okScalar = key === 'logit_scale' && t.data.length === 1 && t.shape.length <= 1;
    if (!okScalar && !sameShape(t.shape, shape)) {
      misshaped.push(key);
      details.push(`${key}: expected ${fmt(shape)}, got ${fmt(t.shape)}`);
    } else if (t.data.length !== shape.reduce((a, b) => a * b, 1)) {
      misshaped.push(key);
      details.push(`${key}: shape ${fmt(t.shape)} but ${t.data.length} values`);
    }
  }
  if (missing.length || misshaped.length) {
    const parts: string[] = [];
    if (missing.length)
      parts.push(
        `missing ${missing.length} key(s): ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ', …' : ''}`,
      );
    if (misshaped.length)
      parts.push(
        `mis-shaped ${misshaped.length} key(s): ${details.slice(0, 20).join('; ')}${details.length > 20 ? '; …' : ''}`,
      );
    throw new WeightsError(`state dict does not match the model config: ${parts.join('; ')}`, missing, misshaped);
  }
}
