/**
 * A stress variant of a model for the int8 accuracy contract: trained ViTs carry a few activation
 * channels far larger than the rest (the LayerNorm gains of those channels are tens of times the
 * others), which stretches a per-token int8 scale and rounds every other channel of the token to a
 * few levels. This multiplies the gains of a few fixed channels per tower by ×20–×50 in every
 * LayerNorm that feeds a projection (ln_1, ln_2 of each block, ln_post / ln_final), the same
 * channels throughout the tower as in trained models.
 */
import type { ModelConfig } from './config';
import { Rng } from './random-init';
import type { StateDict } from './state-dict';

export interface OutlierOptions {
  /** Outlier channels per tower. */
  channels: number;
  minFactor: number;
  maxFactor: number;
  seed: number;
}

export const DEFAULT_OUTLIERS: OutlierOptions = { channels: 4, minFactor: 20, maxFactor: 50, seed: 0 };

/** A copy of `sd` (tensors shared except the LayerNorm gains it changes) with outlier channels. */
export function withOutlierGains(sd: StateDict, cfg: ModelConfig, o: OutlierOptions = DEFAULT_OUTLIERS): StateDict {
  const out: StateDict = new Map(sd);
  const towers = [
    {
      width: cfg.vision_cfg.width,
      stream: 'visual',
      keys: (k: string) => /^visual\.(transformer\.resblocks\.\d+\.ln_[12]|ln_post)\.weight$/.test(k),
    },
    {
      width: cfg.text_cfg.width,
      stream: 'textual',
      keys: (k: string) => /^(transformer\.resblocks\.\d+\.ln_[12]|ln_final)\.weight$/.test(k),
    },
  ];
  for (const t of towers) {
    const rng = new Rng(o.seed, `outliers-${t.stream}`);
    const picked = new Map<number, number>();
    while (picked.size < Math.min(o.channels, t.width)) {
      const c = Math.floor(rng.uniform() * t.width);
      if (!picked.has(c)) picked.set(c, o.minFactor + (o.maxFactor - o.minFactor) * rng.uniform());
    }
    for (const [key, tensor] of sd) {
      if (!t.keys(key)) continue;
      const data = Float32Array.from(tensor.data);
      for (const [c, factor] of picked) data[c] *= factor;
      out.set(key, { shape: [...tensor.shape], data });
    }
  }
  return out;
}
