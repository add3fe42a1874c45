/**
 * The OpenCLIP model and preprocessing configuration, in the shape of the `open_clip_config.json`
 * files that hub checkpoints ship (`model_cfg` + `preprocess_cfg`). Fields that a checkpoint may
 * leave out take open_clip's defaults, applied by `resolveConfig`, so every later stage works on a
 * complete config and never guesses.
 */

export interface VisionConfig {
  image_size: number;
  patch_size: number;
  width: number;
  layers: number;
  /** open_clip names the per-head width; heads = width / head_width. */
  head_width: number;
  mlp_ratio: number;
}

export interface TextConfig {
  context_length: number;
  vocab_size: number;
  width: number;
  heads: number;
  layers: number;
  mlp_ratio: number;
}

export interface ModelConfig {
  embed_dim: number;
  quick_gelu: boolean;
  vision_cfg: VisionConfig;
  text_cfg: TextConfig;
}

export interface PreprocessConfig {
  size: number;
  mode: 'RGB';
  mean: [number, number, number];
  std: [number, number, number];
  interpolation: 'bicubic' | 'bilinear';
  resize_mode: 'shortest' | 'longest' | 'squash';
  fill_color: number;
}

/** Rejects a preprocess_cfg the transform cannot honour (RangeError: a configuration bug, not bad input). */
export function checkPreprocessConfig(cfg: PreprocessConfig): void {
  if (!Number.isInteger(cfg.size) || cfg.size < 1 || cfg.size > 4096)
    throw new RangeError(`preprocess size must be an integer in 1..4096, got ${cfg.size}`);
  if (!Number.isInteger(cfg.fill_color) || cfg.fill_color < 0 || cfg.fill_color > 255) {
    throw new RangeError(`preprocess fill_color must be an integer in 0..255, got ${cfg.fill_color}`);
  }
  if (cfg.interpolation !== 'bicubic' && cfg.interpolation !== 'bilinear')
    throw new RangeError(`unsupported interpolation ${String(cfg.interpolation)}`);
  for (const [name, v] of [
    ['mean', cfg.mean],
    ['std', cfg.std],
  ] as const) {
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x)))
      throw new RangeError(`preprocess ${name} must be 3 finite numbers`);
  }
  if (cfg.std.some((x) => x === 0)) throw new RangeError('preprocess std must not contain 0');
}

export interface OpenClipConfig {
  model_cfg: ModelConfig;
  preprocess_cfg: PreprocessConfig;
}

export const OPENAI_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Fills open_clip's defaults into a possibly partial `open_clip_config.json`. */
export function resolveConfig(raw: unknown): OpenClipConfig {
  const r = (raw ?? {}) as {
    model_cfg?: Partial<ModelConfig> & Record<string, unknown>;
    preprocess_cfg?: Partial<PreprocessConfig>;
  };
  const m = r.model_cfg;
  if (!m || typeof m !== 'object') throw new Error('open_clip config has no "model_cfg" object');
  if (typeof m.embed_dim !== 'number') throw new Error('open_clip config: model_cfg.embed_dim is missing');
  const v = (m.vision_cfg ?? {}) as Partial<VisionConfig> & Record<string, unknown>;
  const t = (m.text_cfg ?? {}) as Partial<TextConfig> & Record<string, unknown>;
  for (const unsupported of ['timm_model_name', 'hf_model_name']) {
    if (v[unsupported] || t[unsupported]) {
      throw new Error(
        `open_clip config uses ${unsupported}: only the plain ViT image tower and CLIP text transformer are supported`,
      );
    }
  }
  const image_size = Array.isArray(v.image_size) ? Number(v.image_size[0]) : (v.image_size ?? 224);
  const vision_cfg: VisionConfig = {
    image_size,
    patch_size: v.patch_size ?? 16,
    width: v.width ?? 768,
    layers: v.layers ?? 12,
    head_width: v.head_width ?? 64,
    mlp_ratio: v.mlp_ratio ?? 4.0,
  };
  const text_cfg: TextConfig = {
    context_length: t.context_length ?? 77,
    vocab_size: t.vocab_size ?? 49408,
    width: t.width ?? 512,
    heads: t.heads ?? 8,
    layers: t.layers ?? 12,
    mlp_ratio: t.mlp_ratio ?? 4.0,
  };
  if (vision_cfg.width % vision_cfg.head_width !== 0)
    throw new Error(`vision width ${vision_cfg.width} is not a multiple of head_width ${vision_cfg.head_width}`);
  if (text_cfg.width % text_cfg.heads !== 0)
    throw new Error(`text width ${text_cfg.width} is not a multiple of heads ${text_cfg.heads}`);
  if (vision_cfg.image_size % vision_cfg.patch_size !== 0)
    throw new Error(`image_size ${vision_cfg.image_size} is not a multiple of patch_size ${vision_cfg.patch_size}`);
  const p = r.preprocess_cfg ?? {};
  const preprocess_cfg: PreprocessConfig = {
    size: Array.isArray(p.size) ? Number(p.size[0]) : (p.size ?? image_size),
    mode: 'RGB',
    mean: (p.mean as [number, number, number]) ?? OPENAI_MEAN,
    std: (p.std as [number, number, number]) ?? OPENAI_STD,
    interpolation: p.interpolation ?? 'bicubic',
    resize_mode: p.resize_mode ?? 'shortest',
    fill_color: p.fill_color ?? 0,
  };
  return {
    model_cfg: { embed_dim: m.embed_dim, quick_gelu: Boolean(m.quick_gelu), vision_cfg, text_cfg },
    preprocess_cfg,
  };
}

/** Architectures that `clipserve init-model --arch` builds with random weights. */
export const ARCH_PRESETS: Record<'tiny' | 'ViT-B-32' | 'ViT-L-14', ModelConfig> = {
  tiny: {
    embed_dim: 32,
    quick_gelu: false,
    vision_cfg: { image_size: 64, patch_size: 16, width: 64, layers: 2, head_width: 16, mlp_ratio: 4 },
    text_cfg: { context_length: 77, vocab_size: 49408, width: 32, heads: 2, layers: 2, mlp_ratio: 4 },
  },
  'ViT-B-32': {
    embed_dim: 512,
    quick_gelu: false,
    vision_cfg: { image_size: 224, patch_size: 32, width: 768, layers: 12, head_width: 64, mlp_ratio: 4 },
    text_cfg: { context_length: 77, vocab_size: 49408, width: 512, heads: 8, layers: 12, mlp_ratio: 4 },
  },
  'ViT-L-14': {
    embed_dim: 768,
    quick_gelu: false,
    vision_cfg: { image_size: 224, patch_size: 14, width: 1024, layers: 24, head_width: 64, mlp_ratio: 4 },
    text_cfg: { context_length: 77, vocab_size: 49408, width: 768, heads: 12, layers: 12, mlp_ratio: 4 },
  },
};
export type ArchName = keyof typeof ARCH_PRESETS;
