/**
 * open_clip_train builds its model from a registered architecture name (`--model ViT-L-14`), not
 * from a config file, so the base model's config has to be recognised as one of open_clip's
 * built-in architectures. The comparison is on the fields that shape the weights; quick_gelu
 * selects open_clip's `-quickgelu` variant of the same architecture.
 */
import { ARCH_PRESETS, type ModelConfig } from '../../model/config';
import { FineTuneValidationError } from '../method';

/** open_clip's built-in architectures that clipserve serves (tiny is clipserve's own test preset). */
const OPEN_CLIP_ARCHITECTURES: ReadonlyArray<[string, ModelConfig]> = (['ViT-B-32', 'ViT-L-14'] as const).map((n) => [n, ARCH_PRESETS[n]]);

function sameArchitecture(a: ModelConfig, b: ModelConfig): boolean {
  const av = a.vision_cfg;
  const bv = b.vision_cfg;
  const at = a.text_cfg;
  const bt = b.text_cfg;
  return (
    a.embed_dim === b.embed_dim &&
    av.image_size === bv.image_size &&
    av.patch_size === bv.patch_size &&
    av.width === bv.width &&
    av.layers === bv.layers &&
    av.head_width === bv.head_width &&
    av.mlp_ratio === bv.mlp_ratio &&
    at.context_length === bt.context_length &&
    at.vocab_size === bt.vocab_size &&
    at.width === bt.width &&
    at.heads === bt.heads &&
    at.layers === bt.layers &&
    at.mlp_ratio === bt.mlp_ratio
  );
}

/** The `--model` name for a base model's config; throws FineTuneValidationError when open_clip has none. */
export function openClipModelName(cfg: ModelConfig): string {
  for (const [name, preset] of OPEN_CLIP_ARCHITECTURES) {
    if (sameArchitecture(cfg, preset)) return cfg.quick_gelu ? `${name}-quickgelu` : name;
  }
  const v = cfg.vision_cfg;
  throw new FineTuneValidationError(
    `full fine-tune: the base model's architecture (embed_dim ${cfg.embed_dim}, vision ${v.layers}x${v.width} patch ${v.patch_size} @${v.image_size}px) ` +
      `is not one of open_clip's built-in architectures (${OPEN_CLIP_ARCHITECTURES.map(([n]) => n).join(', ')}); ` +
      'configure the trainer model name explicitly (createFullMethod({ trainerModel }))',
  );
}
