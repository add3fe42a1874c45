/**
 * The OpenCLIP towers as ONNX graphs, following open_clip's `CLIP.encode_image` / `encode_text`
 * in eval mode (see the golden README, "Forward semantics"):
 *
 *   image: conv1 (no bias, kernel = stride = patch) → [class ; patches] + pos → ln_pre → blocks
 *          → ln_post(class token) → @ proj
 *   text:  token_embedding[ids] + pos[:T] → causal blocks → ln_final(x[argmax ids]) → @ text_projection
 *
 * Blocks are pre-LN residual attention blocks. Two attention formulations exist: 'contrib' uses
 * onnxruntime's fused com.microsoft.Attention kernel (unidirectional=1 for the causal text mask),
 * 'plain' spells it out with MatMul/Softmax in standard ONNX. Both are exact to float32 rounding.
 *
 * Pooling-token-only layer norms (ln_post on the class token, ln_final on the argmax token) give
 * the same numbers as open_clip (LayerNorm is per token) and skip work on the other tokens.
 * `input_ids` has a dynamic sequence axis: with the causal mask, positions after the pooled EOT
 * cannot influence it, so callers may run a batch cut to its longest EOT + 1.
 */
import type { ModelConfig } from '../model/config';
import type { WeightTensor } from '../model/state-dict';
import { attr, MS_DOMAIN, type GraphBuilder } from './graph-builder';
import { DataType } from './proto';
import { quantizePerColumn } from './quantize';

export type AttentionImpl = 'contrib' | 'mha' | 'plain';
export type PatchEmbedImpl = 'conv' | 'matmul';

export interface TowerOptions {
  attention: AttentionImpl;
  patchEmbed: PatchEmbedImpl;
}

/** Measured on a 2-core AVX-512 CPU with ViT-B/32 through the runtime (dist-bench/bench/graph-variants.js, ORT
 *  level 'all'): plain, contrib Attention and MultiHeadAttention all ran ~22 images/s at batch 1,
 *  ~32/s at batch 8 and ~34 texts/s at 77 positions, within noise of each other (the towers are
 *  GEMM-bound); outputs agree to 1e-6. Plain standard ONNX wins the tie: it runs on any provider
 *  without contrib kernels. Conv and patch-MatMul patch embeddings were equally fast. */
export const DEFAULT_TOWER_OPTIONS: TowerOptions = { attention: 'plain', patchEmbed: 'conv' };

export const IMAGE_INPUT = 'pixel_values';
export const IMAGE_OUTPUT = 'image_embeds';
export const TEXT_INPUT = 'input_ids';
export const TEXT_OUTPUT = 'text_embeds';

export type WeightLookup = (key: string) => WeightTensor;

/**
 * Which projections run in int8 (see ./quantize and `int8MatMul`). With `calibrate`, every
 * quantizable layer is computed both ways instead: the float32 result flows on, and the graph gets
 * two extra scalar outputs per layer, `drift_err:<layer>` = Σ(y_int8 − y)² and
 * `drift_ref:<layer>` = Σy², from which the converter decides which layers stay float32.
 */
export interface Int8Plan {
  layers: ReadonlySet<string>;
  calibrate?: boolean;
  /** How the activations of int8 layers are quantized (default 'symmetric', see `int8MatMul`). */
  activations?: Int8Activations;
  /** The int8 GEMM formulation (default 'matmul-integer', see `int8MatMul`). */
  kernel?: Int8Kernel;
  /** Adds an output `input_absmax:<layer>` per LayerNorm-fed projection (see `smoothingSource`):
   *  the largest |x| of each input channel over the batch, for SmoothQuant-style smoothing. */
  inputRanges?: boolean;
}

export const INPUT_ABSMAX_PREFIX = 'input_absmax:';

/**
 * 'matmul-integer': standard ONNX only: Div by the row scales, QuantizeLinear, MatMulInteger,
 * Cast, two Muls (any provider with integer kernels runs it).
 * 'to-float': rows flattened to 2-D so that one QuantizeLinear with per-axis (per-row) scales does
 * the division and the rounding in one pass, then onnxruntime's com.microsoft
 * MatMulIntegerToFloat, whose GEMM epilogue applies the per-column weight scales while writing
 * float32 (no int32 tensor, no Cast), and one Mul by the row scales. Same numbers.
 */
export type Int8Kernel = 'matmul-integer' | 'to-float';
export const INT8_KERNELS: readonly Int8Kernel[] = ['matmul-integer', 'to-float'];

/**
 * The LayerNorm whose output is the only input of projection `layer`, if any: ln_1 → q/k/v
 * projection, ln_2 → mlp.c_fc, ln_post → visual.proj, ln_final → text_projection. Dividing that
 * LayerNorm's gain and bias by s and multiplying the projection's input rows by s computes the
 * same function, and moves activation outliers into the weights (SmoothQuant).
 */
export function smoothingSource(layer: string): string | undefined {
  if (layer === 'visual.proj') return 'visual.ln_post';
  if (layer === 'text_projection') return 'ln_final';
  if (layer.endsWith('.attn.in_proj')) return `${layer.slice(0, -'.attn.in_proj'.length)}.ln_1`;
  if (layer.endsWith('.mlp.c_fc')) return `${layer.slice(0, -'.mlp.c_fc'.length)}.ln_2`;
  return undefined;
}

/**
 * 'symmetric': every input row on [-max|x|, max|x|] around zero point 128.
 * 'shifted-gelu': the GELU outputs feeding `mlp.c_proj` are shifted by GELU_SHIFT onto [0, max]
 * and use all 256 levels (zero point 0), about twice the resolution; other layers symmetric.
 */
export type Int8Activations = 'symmetric' | 'shifted-gelu';
export const INT8_ACTIVATIONS: readonly Int8Activations[] = ['symmetric', 'shifted-gelu'];

/** Larger than −min GELU(x) (0.16997 exact, 0.1636 QuickGELU): every GELU output + this is ≥ 0. */
export const GELU_SHIFT = 0.17;

/** The weight of projection `layer`: a [out, in] Linear weight (stored transposed) or, for the
 *  final projections, an [in, out] matrix the graph multiplies by directly. */
export function projectionWeight(layer: string): { key: string; transposed: boolean } {
  if (layer === 'visual.proj' || layer === 'text_projection') return { key: layer, transposed: false };
  if (layer.endsWith('.attn.in_proj')) return { key: `${layer}_weight`, transposed: true };
  return { key: `${layer}.weight`, transposed: true };
}

/** Initializer names of an int8 projection's values ([in, out] int8) and per-column scales. */
export const int8WeightNames = (layer: string): { values: string; scales: string } => ({
  values: `${layer}.weight_int8`,
  scales: `${layer}.weight_scale`,
});

export const DRIFT_ERR_PREFIX = 'drift_err:';
export const DRIFT_REF_PREFIX = 'drift_ref:';

/**
 * The projections that can run in int8, by layer name: per block the packed q/k/v projection
 * (`<block>.attn.in_proj`), `<block>.attn.out_proj`, `<block>.mlp.c_fc` and `<block>.mlp.c_proj`,
 * then the tower's final projection (`visual.proj`, `text_projection`).
 */
/** The towers' final projections: they run on one row per sample (the pooled token). */
export const FINAL_PROJECTIONS: readonly string[] = ['visual.proj', 'text_projection'];

export function quantizableLayers(cfg: ModelConfig, tower: 'visual' | 'textual'): string[] {
  const [prefix, layers, last] =
    tower === 'visual'
      ? ['visual.transformer.resblocks', cfg.vision_cfg.layers, 'visual.proj']
      : ['transformer.resblocks', cfg.text_cfg.layers, 'text_projection'];
  const out: string[] = [];
  for (let i = 0; i < layers; i++)
    for (const l of ['attn.in_proj', 'attn.out_proj', 'mlp.c_fc', 'mlp.c_proj']) out.push(`${prefix}.${i}.${l}`);
  out.push(last);
  return out;
}

const LN_EPS = 1e-5;

function transpose2d(t: WeightTensor): Float32Array {
  const [rows, cols] = t.shape;
  const out = new Float32Array(rows * cols);
  const src = t.data;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + c];
  }
  return out;
}

class TowerWriter {
  private readonly scalarCache = new Map<number, string>();
  /** The [T, T] additive causal mask value, for the 'plain' attention of the text tower. */
  causalMask: string | undefined;

  constructor(
    readonly b: GraphBuilder,
    private readonly get: WeightLookup,
    readonly opts: TowerOptions,
    private readonly int8?: Int8Plan,
  ) {
    if (int8 && opts.attention === 'contrib')
      throw new Error(
        'int8 projections need attention "plain" or "mha" (the fused Attention kernel takes float weights)',
      );
  }

  /** A weight stored as in the checkpoint. */
  w(key: string): string {
    const t = this.get(key);
    return this.b.weight(key, t.data, t.shape);
  }

  /** A [out, in] Linear weight stored transposed ([in, out]) so the graph multiplies x @ Wᵀ directly. */
  wT(key: string): string {
    const t = this.get(key);
    return this.b.weight(`${key}.T`, transpose2d(t), [t.shape[1], t.shape[0]]);
  }

  scalar(v: number): string {
    let name = this.scalarCache.get(v);
    if (!name) {
      name = this.b.constF32('const_f32', Float32Array.of(v), []);
      this.scalarCache.set(v, name);
    }
    return name;
  }

  layerNorm(x: string, prefix: string): string {
    return this.b.op(
      'LayerNormalization',
      [x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`)],
      { axis: attr.int(-1), epsilon: attr.float(LN_EPS) },
      { name: prefix },
    );
  }

  linear(x: string, prefix: string): string {
    const y = this.project(x, prefix);
    return this.b.op('Add', [y, this.w(`${prefix}.bias`)], {}, { name: `${prefix}.bias_add` });
  }

  /**
   * then(x @ W) for the projection `layer` (see projectionWeight): float32 MatMul, int8 (when the
   * plan lists the layer), or both with drift outputs (compared after `then`) when calibrating.
   */
  project(x: string, layer: string, then: (y: string) => string = (y) => y): string {
    const b = this.b;
    const { key, transposed } = projectionWeight(layer);
    const plan = this.int8;
    const float = (): string =>
      b.op('MatMul', [x, transposed ? this.wT(key) : this.w(key)], {}, { name: `${layer}.matmul` });
    const t = this.get(key);
    const [rows, cols] = transposed ? [t.shape[1], t.shape[0]] : t.shape;
    if (plan?.inputRanges && smoothingSource(layer)) {
      const flat = b.op(
        'Reshape',
        [b.op('Abs', [x], {}, { name: `${layer}.in_abs` }), b.constI64([-1, rows])],
        {},
        { name: `${layer}.in_rows` },
      );
      const absMax = b.op(
        'ReduceMax',
        [flat],
        { axes: attr.ints([0]), keepdims: attr.int(0) },
        { name: `${layer}.in_absmax` },
      );
      b.output(absMax, `${INPUT_ABSMAX_PREFIX}${layer}`, DataType.FLOAT, [rows]);
    }
    if (!plan || (!plan.calibrate && !plan.layers.has(layer))) return then(float());
    const shift = plan.activations === 'shifted-gelu' && layer.endsWith('.mlp.c_proj') ? GELU_SHIFT : 0;
    const q = this.int8MatMul(
      x,
      layer,
      transposed ? transpose2d(t) : t.data,
      rows,
      cols,
      shift,
      plan.kernel ?? 'matmul-integer',
    );
    if (!plan.calibrate) return then(q);
    // The drift is measured after `then`: for the q/k/v projection that is the attention output,
    // because softmax turns a small relative error in large scores into a different attention.
    const y = then(float());
    const yq = then(q);
    const sumSq = (v: string, n: string): string =>
      b.op(
        'ReduceSum',
        [b.op('Mul', [v, v], {}, { name: `${layer}.${n}_sq` })],
        { keepdims: attr.int(0) },
        { name: `${layer}.${n}_sum` },
      );
    const diff = b.op('Sub', [yq, y], {}, { name: `${layer}.drift` });
    b.output(sumSq(diff, 'drift'), `${DRIFT_ERR_PREFIX}${layer}`, DataType.FLOAT, []);
    b.output(sumSq(y, 'ref'), `${DRIFT_REF_PREFIX}${layer}`, DataType.FLOAT, []);
    return y;
  }

  /**
   * x @ W in int8: W per output channel (symmetric, ./quantize), x per row (token) with a scale
   * computed at run time. onnxruntime's MatMulInteger takes one scalar activation zero point (no
   * per-row zero points), so each row is divided by its own scale before QuantizeLinear (scale 1)
   * and the per-row scales are applied to the int32 result instead, with the per-column weight
   * scales.
   *  - shift 0 (symmetric): scale max|row| / 127, rounded onto uint8 around zero point 128.
   *  - shift c > 0, for inputs known to be ≥ −c (GELU outputs): the row is shifted to x + c ≥ 0,
   *    scale max(x + c) / 255, zero point 0: all 256 levels cover the row's actual range instead
   *    of half of them covering negatives that GELU never produces. The shift comes back out
   *    exactly as a constant: (x + c) @ W = x @ W + c·colsum(W), with W the dequantized weight.
   */
  int8MatMul(
    x: string,
    layer: string,
    w: Float32Array,
    rows: number,
    cols: number,
    shift = 0,
    kernel: Int8Kernel = 'matmul-integer',
  ): string {
    const b = this.b;
    const q = quantizePerColumn(w, rows, cols);
    const names = int8WeightNames(layer);
    const wq = b.exactWeight(names.values, q.values, [rows, cols]);
    const ws = b.exactWeight(names.scales, q.scales, [cols]);
    const zp = shift > 0 ? 0 : 128;
    const zero = b.constU8([zp], []);
    // 'to-float' works on [tokens, in] rows; the result gets x's leading dimensions back at the end.
    const x2 =
      kernel === 'to-float' ? b.op('Reshape', [x, b.constI64([-1, rows])], {}, { name: `${layer}.x_rows` }) : x;
    const xin = shift > 0 ? b.op('Add', [x2, this.scalar(shift)], {}, { name: `${layer}.x_shifted` }) : x2;
    const range = shift > 0 ? xin : b.op('Abs', [x2], {}, { name: `${layer}.x_abs` });
    const rowMax = b.op(
      'ReduceMax',
      [range],
      { axes: attr.ints([-1]), keepdims: attr.int(1) },
      { name: `${layer}.x_absmax` },
    );
    // A row of zeros keeps a tiny positive scale so that the division stays finite (it quantizes to 0).
    const rowScale = b.op(
      'Div',
      [
        b.op('Max', [rowMax, this.scalar(1e-30)], {}, { name: `${layer}.x_absmax_pos` }),
        this.scalar(shift > 0 ? 255 : 127),
      ],
      {},
      { name: `${layer}.x_scale` },
    );
    let y: string;
    if (kernel === 'to-float') {
      const scales = b.op('Reshape', [rowScale, b.constI64([-1])], {}, { name: `${layer}.x_scale_rows` });
      const zps = b.op(
        'Expand',
        [b.constU8([zp], [1]), b.op('Shape', [scales], {}, { name: `${layer}.x_rows_n` })],
        {},
        { name: `${layer}.x_zero_points` },
      );
      const xq = b.op('QuantizeLinear', [xin, scales, zps], { axis: attr.int(0) }, { name: `${layer}.x_int8` });
      const scaled = b.op(
        'MatMulIntegerToFloat',
        [xq, wq, this.scalar(1), ws, zero],
        {},
        { domain: MS_DOMAIN, name: `${layer}.matmul_int8` },
      );
      y = b.op('Mul', [scaled, rowScale], {}, { name: `${layer}.dequant` });
    } else {
      const xq = b.op(
        'QuantizeLinear',
        [b.op('Div', [xin, rowScale], {}, { name: `${layer}.x_scaled` }), this.scalar(1), zero],
        {},
        { name: `${layer}.x_int8` },
      );
      const acc = b.op('MatMulInteger', [xq, wq, zero], {}, { name: `${layer}.matmul_int8` });
      const f = b.op('Cast', [acc], { to: attr.int(DataType.FLOAT) }, { name: `${layer}.acc_float` });
      y = b.op(
        'Mul',
        [b.op('Mul', [f, rowScale], {}, { name: `${layer}.row_scaled` }), ws],
        {},
        { name: `${layer}.dequant` },
      );
    }
    if (shift > 0) {
      const colSum = new Float32Array(cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) colSum[c] += q.values[r * cols + c];
      const correction = colSum.map((v, c) => -shift * v * q.scales[c]);
      y = b.op(
        'Add',
        [y, b.exactWeight(`${layer}.shift_correction`, correction, [cols])],
        {},
        { name: `${layer}.unshift` },
      );
    }
    if (kernel !== 'to-float') return y;
    const lead = b.op('Shape', [x], { start: attr.int(0), end: attr.int(-1) }, { name: `${layer}.x_lead` });
    const shape = b.op('Concat', [lead, b.constI64([cols])], { axis: attr.int(0) }, { name: `${layer}.y_shape` });
    return b.op('Reshape', [y, shape], {}, { name: `${layer}.y` });
  }

  activation(x: string, quickGelu: boolean, prefix: string): string {
    const b = this.b;
    if (quickGelu) {
      // x * sigmoid(1.702 x): the pattern onnxruntime fuses into QuickGelu.
      const s = b.op(
        'Sigmoid',
        [b.op('Mul', [x, this.scalar(1.702)], {}, { name: `${prefix}.qgelu_scale` })],
        {},
        { name: `${prefix}.qgelu_sigmoid` },
      );
      return b.op('Mul', [x, s], {}, { name: `${prefix}.qgelu` });
    }
    // 0.5 x (1 + erf(x / √2)): the exact GELU in the form onnxruntime's GeluFusion recognises.
    const e = b.op(
      'Erf',
      [b.op('Div', [x, this.scalar(Math.SQRT2)], {}, { name: `${prefix}.gelu_div` })],
      {},
      { name: `${prefix}.gelu_erf` },
    );
    const m = b.op(
      'Mul',
      [x, b.op('Add', [e, this.scalar(1)], {}, { name: `${prefix}.gelu_add` })],
      {},
      { name: `${prefix}.gelu_mul` },
    );
    return b.op('Mul', [m, this.scalar(0.5)], {}, { name: `${prefix}.gelu` });
  }

  /** Multi-head self-attention with open_clip's packed in_proj (rows q, k, v) and out_proj. */
  attention(h: string, prefix: string, width: number, heads: number, causal: boolean): string {
    const b = this.b;
    let o: string;
    let bias: string | undefined;
    const qkvBias = (qkvNoBias: string): string =>
      b.op('Add', [qkvNoBias, (bias ??= this.w(`${prefix}.in_proj_bias`))], {}, { name: `${prefix}.qkv_bias` });
    if (this.opts.attention === 'mha') {
      // Projection in standard ops, then onnxruntime's MultiHeadAttention on separate q, k, v.
      o = this.project(h, `${prefix}.in_proj`, (qkvNoBias) => {
        const [q, k, v] = b.node(
          'Split',
          [qkvBias(qkvNoBias), b.constI64([width, width, width])],
          { axis: attr.int(-1) },
          { outputs: 3, name: `${prefix}.qkv_split` },
        );
        const attrs = { num_heads: attr.int(heads), ...(causal ? { unidirectional: attr.int(1) } : {}) };
        return b.op('MultiHeadAttention', [q, k, v], attrs, { domain: MS_DOMAIN, name: `${prefix}.mha` });
      });
    } else if (this.opts.attention === 'contrib') {
      const attrs = { num_heads: attr.int(heads), ...(causal ? { unidirectional: attr.int(1) } : {}) };
      o = b.op('Attention', [h, this.wT(`${prefix}.in_proj_weight`), this.w(`${prefix}.in_proj_bias`)], attrs, {
        domain: MS_DOMAIN,
        name: `${prefix}.mha`,
      });
    } else {
      o = this.project(h, `${prefix}.in_proj`, (qkvNoBias) =>
        this.plainAttention(qkvBias(qkvNoBias), prefix, width, heads, causal),
      );
    }
    return this.linear(o, `${prefix}.out_proj`);
  }

  /** Scaled dot-product attention in standard ONNX ops on the packed q/k/v ([B, T, 3·width]). */
  plainAttention(qkv: string, prefix: string, width: number, heads: number, causal: boolean): string {
    const b = this.b;
    const headDim = width / heads;
    const split = b.op('Reshape', [qkv, b.constI64([0, 0, 3, heads, headDim])], {}, { name: `${prefix}.qkv_heads` });
    const part = (i: number, perm: number[], n: string): string =>
      b.op(
        'Transpose',
        [b.op('Gather', [split, b.constI64([i], [])], { axis: attr.int(2) }, { name: `${prefix}.${n}_pick` })],
        { perm: attr.ints(perm) },
        { name: `${prefix}.${n}` },
      );
    const q = part(0, [0, 2, 1, 3], 'q'); // [B,H,T,d]
    const kT = part(1, [0, 2, 3, 1], 'kT'); // [B,H,d,T]
    const v = part(2, [0, 2, 1, 3], 'v'); // [B,H,T,d]
    const qs = b.op('Mul', [q, this.scalar(headDim ** -0.5)], {}, { name: `${prefix}.q_scale` });
    let s = b.op('MatMul', [qs, kT], {}, { name: `${prefix}.scores` });
    if (causal) {
      if (!this.causalMask) throw new Error('causal attention needs the mask built first');
      s = b.op('Add', [s, this.causalMask], {}, { name: `${prefix}.causal` });
    }
    const p = b.op('Softmax', [s], { axis: attr.int(-1) }, { name: `${prefix}.softmax` });
    const ctx = b.op(
      'Transpose',
      [b.op('MatMul', [p, v], {}, { name: `${prefix}.context` })],
      { perm: attr.ints([0, 2, 1, 3]) },
      { name: `${prefix}.merge` },
    );
    return b.op('Reshape', [ctx, b.constI64([0, 0, width])], {}, { name: `${prefix}.merged` });
  }

  block(x: string, prefix: string, width: number, heads: number, quickGelu: boolean, causal: boolean): string {
    const b = this.b;
    const a = this.attention(this.layerNorm(x, `${prefix}.ln_1`), `${prefix}.attn`, width, heads, causal);
    const x1 = b.op('Add', [x, a], {}, { name: `${prefix}.residual_attn` });
    const hidden = this.activation(
      this.linear(this.layerNorm(x1, `${prefix}.ln_2`), `${prefix}.mlp.c_fc`),
      quickGelu,
      `${prefix}.mlp`,
    );
    const m = this.linear(hidden, `${prefix}.mlp.c_proj`);
    return b.op('Add', [x1, m], {}, { name: `${prefix}.residual_mlp` });
  }
}

/** Builds the image tower: `pixel_values` [batch,3,S,S] float32 → `image_embeds` [batch,E]. */
export function buildVisualGraph(
  b: GraphBuilder,
  cfg: ModelConfig,
  get: WeightLookup,
  opts: TowerOptions = DEFAULT_TOWER_OPTIONS,
  int8?: Int8Plan,
): void {
  const v = cfg.vision_cfg;
  const grid = v.image_size / v.patch_size;
  const heads = v.width / v.head_width;
  const t = new TowerWriter(b, get, opts, int8);
  const pixels = b.input(IMAGE_INPUT, DataType.FLOAT, ['batch', 3, v.image_size, v.image_size]);

  let patches: string; // [B, g², width], patches in row-major grid order
  if (opts.patchEmbed === 'conv') {
    const conv = b.op(
      'Conv',
      [pixels, t.w('visual.conv1.weight')],
      { kernel_shape: attr.ints([v.patch_size, v.patch_size]), strides: attr.ints([v.patch_size, v.patch_size]) },
      { name: 'visual.conv1' },
    );
    const flat = b.op('Reshape', [conv, b.constI64([0, v.width, grid * grid])], {}, { name: 'visual.conv1_flat' });
    patches = b.op('Transpose', [flat], { perm: attr.ints([0, 2, 1]) }, { name: 'visual.patches' });
  } else {
    // Cut the image into patches and flatten each as (c, ky, kx), conv1's weight layout.
    const p = v.patch_size;
    const cut = b.op('Reshape', [pixels, b.constI64([-1, 3, grid, p, grid, p])], {}, { name: 'visual.patch_cut' });
    const order = b.op('Transpose', [cut], { perm: attr.ints([0, 2, 4, 1, 3, 5]) }, { name: 'visual.patch_order' });
    const rows = b.op('Reshape', [order, b.constI64([-1, grid * grid, 3 * p * p])], {}, { name: 'visual.patch_rows' });
    const conv = get('visual.conv1.weight');
    const w2d: WeightTensor = { shape: [v.width, 3 * p * p], data: conv.data };
    const wT = b.weight('visual.conv1.weight.T', transpose2d(w2d), [3 * p * p, v.width]);
    patches = b.op('MatMul', [rows, wT], {}, { name: 'visual.conv1' });
  }

  // [class_embedding ; patches] + positional_embedding, adding pos[0] to the class token and
  // pos[1:] to the patches (elementwise the same sums as open_clip's cat-then-add).
  const pos = t.w('visual.positional_embedding');
  const pos0 = b.op('Gather', [pos, b.constI64([0], [])], { axis: attr.int(0) }, { name: 'visual.pos_class' });
  const cls = b.op(
    'Reshape',
    [
      b.op('Add', [t.w('visual.class_embedding'), pos0], {}, { name: 'visual.class_plus_pos' }),
      b.constI64([1, 1, v.width]),
    ],
    {},
    { name: 'visual.class_token' },
  );
  const batch = b.op('Shape', [pixels], { start: attr.int(0), end: attr.int(1) }, { name: 'visual.batch' });
  const clsShape = b.op(
    'Concat',
    [batch, b.constI64([1, v.width])],
    { axis: attr.int(0) },
    { name: 'visual.class_shape' },
  );
  const clsB = b.op('Expand', [cls, clsShape], {}, { name: 'visual.class_tokens' });
  const posRest = b.op(
    'Slice',
    [pos, b.constI64([1]), b.constI64([1 + grid * grid]), b.constI64([0])],
    {},
    { name: 'visual.pos_patches' },
  );
  const patchesPos = b.op('Add', [patches, posRest], {}, { name: 'visual.patches_plus_pos' });
  let x = b.op('Concat', [clsB, patchesPos], { axis: attr.int(1) }, { name: 'visual.tokens' });
  x = t.layerNorm(x, 'visual.ln_pre');
  for (let i = 0; i < v.layers; i++)
    x = t.block(x, `visual.transformer.resblocks.${i}`, v.width, heads, cfg.quick_gelu, false);
  const pooled = b.op('Gather', [x, b.constI64([0], [])], { axis: attr.int(1) }, { name: 'visual.pool_class' });
  const normed = t.layerNorm(pooled, 'visual.ln_post');
  const feats = t.project(normed, 'visual.proj');
  b.output(feats, IMAGE_OUTPUT, DataType.FLOAT, ['batch', cfg.embed_dim]);
}

/** Builds the text tower: `input_ids` [batch, seq] int64 (seq 1..context_length) → `text_embeds` [batch,E]. */
export function buildTextGraph(
  b: GraphBuilder,
  cfg: ModelConfig,
  get: WeightLookup,
  opts: TowerOptions = DEFAULT_TOWER_OPTIONS,
  int8?: Int8Plan,
): void {
  const c = cfg.text_cfg;
  const t = new TowerWriter(b, get, opts, int8);
  const ids = b.input(TEXT_INPUT, DataType.INT64, ['batch', 'sequence']);

  const tokens = b.op(
    'Gather',
    [t.w('token_embedding.weight'), ids],
    { axis: attr.int(0) },
    { name: 'token_embedding' },
  );
  const seqLen = b.op('Shape', [ids], { start: attr.int(1), end: attr.int(2) }, { name: 'text.seq_len' });
  const pos = b.op(
    'Slice',
    [t.w('positional_embedding'), b.constI64([0]), seqLen, b.constI64([0])],
    {},
    { name: 'text.pos_slice' },
  );
  let x = b.op('Add', [tokens, pos], {}, { name: 'text.tokens_plus_pos' });

  if (opts.attention === 'plain') {
    // Additive causal mask, -inf above the diagonal, cut to [T, T] for the actual length.
    const n = c.context_length;
    const full = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) full[i * n + j] = -Infinity;
    const maskConst = b.constF32('text.causal_mask_full', full, [n, n]);
    const ends = b.op('Concat', [seqLen, seqLen], { axis: attr.int(0) }, { name: 'text.mask_ends' });
    t.causalMask = b.op(
      'Slice',
      [maskConst, b.constI64([0, 0]), ends, b.constI64([0, 1])],
      {},
      { name: 'text.causal_mask' },
    );
  }
  for (let i = 0; i < c.layers; i++)
    x = t.block(x, `transformer.resblocks.${i}`, c.width, c.heads, cfg.quick_gelu, true);

  // Pool at argmax(ids): the FIRST maximum, i.e. the first end-of-text token.
  const eot = b.op(
    'ArgMax',
    [ids],
    { axis: attr.int(1), keepdims: attr.int(1), select_last_index: attr.int(0) },
    { name: 'text.eot_index' },
  );
  const pooled = b.op('GatherND', [x, eot], { batch_dims: attr.int(1) }, { name: 'text.pool_eot' });
  const normed = t.layerNorm(pooled, 'ln_final');
  const feats = t.project(normed, 'text_projection');
  b.output(feats, TEXT_OUTPUT, DataType.FLOAT, ['batch', cfg.embed_dim]);
}
