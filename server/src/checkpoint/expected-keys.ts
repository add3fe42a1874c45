/**
 * The state_dict layout open_clip's `CLIP` module has for a given config (plain ViT image tower,
 * CLIP text transformer). Checking a checkpoint against it up front turns a wrong config or a
 * truncated checkpoint into one readable error instead of a failure deep inside graph building.
 */
import type { OpenClipConfig } from '../model/config';
import type { StateDict } from '../model/state-dict';
import { CheckpointError } from './errors';

function blockShapes(prefix: string, width: number, mlpRatio: number, layers: number, out: Map<string, number[]>): void {
  // open_clip: mlp_width = int(width * mlp_ratio)
  const hidden = Math.trunc(width * mlpRatio);
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}transformer.resblocks.${i}.`;
    out.set(`${p}ln_1.weight`, [width]);
    out.set(`${p}ln_1.bias`, [width]);
    out.set(`${p}attn.in_proj_weight`, [3 * width, width]);
    out.set(`${p}attn.in_proj_bias`, [3 * width]);
    out.set(`${p}attn.out_proj.weight`, [width, width]);
    out.set(`${p}attn.out_proj.bias`, [width]);
    out.set(`${p}ln_2.weight`, [width]);
    out.set(`${p}ln_2.bias`, [width]);
    out.set(`${p}mlp.c_fc.weight`, [hidden, width]);
    out.set(`${p}mlp.c_fc.bias`, [hidden]);
    out.set(`${p}mlp.c_proj.weight`, [width, hidden]);
    out.set(`${p}mlp.c_proj.bias`, [width]);
  }
}

export function expectedStateDictShapes(config: OpenClipConfig): Map<string, number[]> {
  const { embed_dim, vision_cfg: v, text_cfg: t } = config.model_cfg;
  const grid = v.image_size / v.patch_size;
  const out = new Map<string, number[]>();
  out.set('positional_embedding', [t.context_length, t.width]);
  out.set('text_projection', [t.width, embed_dim]);
  out.set('logit_scale', []);
  out.set('token_embedding.weight', [t.vocab_size, t.width]);
  out.set('ln_final.weight', [t.width]);
  out.set('ln_final.bias', [t.width]);
  blockShapes('', t.width, t.mlp_ratio, t.layers, out);
  out.set('visual.class_embedding', [v.width]);
  out.set('visual.positional_embedding', [grid * grid + 1, v.width]);
  out.set('visual.proj', [v.width, embed_dim]);
  out.set('visual.conv1.weight', [v.width, 3, v.patch_size, v.patch_size]);
  for (const ln of ['ln_pre', 'ln_post']) {
    out.set(`visual.${ln}.weight`, [v.width]);
    out.set(`visual.${ln}.bias`, [v.width]);
  }
  blockShapes('visual.', v.width, v.mlp_ratio, v.layers, out);
  return out;
}

/**
 * Throws a CheckpointError naming every missing or mis-shaped tensor. Returns the keys the model
 * does not use (e.g. buffers of other open_clip variants), which callers may report.
 */
export function checkStateDictMatchesConfig(config: OpenClipConfig, sd: StateDict, file?: string): string[] {
  const expected = expectedStateDictShapes(config);
  const problems: string[] = [];
  for (const [key, shape] of expected) {
    const t = sd.get(key);
    if (!t) problems.push(`missing "${key}"`);
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      problems.push(`"${key}" has shape [${t.shape.join(', ')}], the config implies [${shape.join(', ')}]`);
    }
  }
  if (problems.length) {
    const shown = problems.slice(0, 8).join('; ');
    const more = problems.length > 8 ? `; and ${problems.length - 8} more` : '';
    throw new CheckpointError(`checkpoint does not match open_clip_config.json: ${shown}${more}`, file);
  }
  return [...sd.keys()].filter((k) => !expected.has(k));
}
