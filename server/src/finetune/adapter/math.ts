/**
 * The adapter's forward and backward pass, written out in typed arrays (float64 for parameters,
 * gradients and optimizer state; the frozen features come in as float32).
 *
 * Per tower a residual linear adapter g = x + W x (W is d×d, row-major, initialised to 0, so training
 * starts at the base model exactly), then u = g / ‖g‖, then CLIP's symmetric InfoNCE loss with the
 * model's fixed temperature s = exp(logit_scale):
 *
 *   L = s · U_img · U_txtᵀ      (B × B; row i = image i against every text)
 *   loss = ½ [ CE(rows of L, diag) + CE(columns of L, diag) ]
 *
 * Backward (all derived by hand, checked numerically in test/unit/finetune/math.test.ts):
 *   dL      = ½ (softmax_rows(L) − I) / B + ½ (softmax_cols(L) − I) / B
 *   dU_img  = s · dL · U_txt,    dU_txt = s · dLᵀ · U_img
 *   dg      = (du − u (u·du)) / ‖g‖
 *   dW      = Σ_b dg_b x_bᵀ
 */

export { seededRandom } from '../../util/random';

export interface AdapterParams {
  /** d×d, row-major. */
  wImage: Float64Array;
  wText: Float64Array;
}

export interface LossAndGrads {
  loss: number;
  gradImage: Float64Array;
  gradText: Float64Array;
}

export class AdapterMathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdapterMathError';
  }
}

/** g = x + W x for every row of `x` (n×d), into a new float64 array. */
export function applyAdapter(x: Float32Array | Float64Array, n: number, d: number, w: Float64Array): Float64Array {
  if (x.length !== n * d) throw new AdapterMathError(`expected ${n}×${d} features, got ${x.length}`);
  if (w.length !== d * d) throw new AdapterMathError(`expected a ${d}×${d} adapter, got ${w.length} values`);
  const g = new Float64Array(n * d);
  for (let b = 0; b < n; b++) {
    const xo = b * d;
    for (let j = 0; j < d; j++) {
      let acc = x[xo + j];
      const wo = j * d;
      for (let k = 0; k < d; k++) acc += w[wo + k] * x[xo + k];
      g[xo + j] = acc;
    }
  }
  return g;
}

/** Row norms and the normalised rows of g (n×d). A zero row cannot be normalised: typed error. */
function normalizeRows(g: Float64Array, n: number, d: number): { u: Float64Array; norms: Float64Array } {
  const u = new Float64Array(n * d);
  const norms = new Float64Array(n);
  for (let b = 0; b < n; b++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += g[b * d + j] * g[b * d + j];
    const r = Math.sqrt(s);
    if (!(r > 0) || !Number.isFinite(r)) throw new AdapterMathError(`feature row ${b} has norm ${r}: cannot normalise`);
    norms[b] = r;
    for (let j = 0; j < d; j++) u[b * d + j] = g[b * d + j] / r;
  }
  return { u, norms };
}

/** dg = (du − u (u·du)) / r per row, then dW += dgᵀ x. */
function backToWeights(
  du: Float64Array,
  u: Float64Array,
  norms: Float64Array,
  x: Float32Array | Float64Array,
  n: number,
  d: number,
): Float64Array {
  const dw = new Float64Array(d * d);
  const dg = new Float64Array(d);
  for (let b = 0; b < n; b++) {
    const o = b * d;
    let dot = 0;
    for (let j = 0; j < d; j++) dot += u[o + j] * du[o + j];
    for (let j = 0; j < d; j++) dg[j] = (du[o + j] - u[o + j] * dot) / norms[b];
    for (let j = 0; j < d; j++) {
      const gj = dg[j];
      if (gj === 0) continue;
      const wo = j * d;
      for (let k = 0; k < d; k++) dw[wo + k] += gj * x[o + k];
    }
  }
  return dw;
}

/** Numerically stable log-sum-exp of `n` values read through `at`. */
function logSumExp(n: number, at: (k: number) => number): number {
  let m = -Infinity;
  for (let k = 0; k < n; k++) m = Math.max(m, at(k));
  let s = 0;
  for (let k = 0; k < n; k++) s += Math.exp(at(k) - m);
  return m + Math.log(s);
}

/**
 * Symmetric contrastive loss of a batch and its gradients with respect to both adapters.
 * `img`, `txt`: B×d raw (unnormalised) features of paired rows; `scale`: exp(logit_scale).
 */
export function contrastiveLossAndGrads(
  params: AdapterParams,
  img: Float32Array | Float64Array,
  txt: Float32Array | Float64Array,
  B: number,
  d: number,
  scale: number,
): LossAndGrads {
  if (B < 1) throw new AdapterMathError('empty batch');
  const gi = applyAdapter(img, B, d, params.wImage);
  const gt = applyAdapter(txt, B, d, params.wText);
  const { u: ui, norms: ri } = normalizeRows(gi, B, d);
  const { u: ut, norms: rt } = normalizeRows(gt, B, d);

  const logits = new Float64Array(B * B);
  for (let i = 0; i < B; i++) {
    for (let j = 0; j < B; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += ui[i * d + k] * ut[j * d + k];
      logits[i * B + j] = scale * acc;
    }
  }

  // dLogits: ½ (softmax over each row − I)/B + ½ (softmax over each column − I)/B.
  const dl = new Float64Array(B * B);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const lse = logSumExp(B, (j) => logits[i * B + j]);
    loss += (lse - logits[i * B + i]) / (2 * B);
    for (let j = 0; j < B; j++) dl[i * B + j] += (Math.exp(logits[i * B + j] - lse) - (i === j ? 1 : 0)) / (2 * B);
  }
  for (let j = 0; j < B; j++) {
    const lse = logSumExp(B, (i) => logits[i * B + j]);
    loss += (lse - logits[j * B + j]) / (2 * B);
    for (let i = 0; i < B; i++) dl[i * B + j] += (Math.exp(logits[i * B + j] - lse) - (i === j ? 1 : 0)) / (2 * B);
  }

  const dui = new Float64Array(B * d);
  const dut = new Float64Array(B * d);
  for (let i = 0; i < B; i++) {
    for (let j = 0; j < B; j++) {
      const g = scale * dl[i * B + j];
      if (g === 0) continue;
      for (let k = 0; k < d; k++) {
        dui[i * d + k] += g * ut[j * d + k];
        dut[j * d + k] += g * ui[i * d + k];
      }
    }
  }
  return { loss, gradImage: backToWeights(dui, ui, ri, img, B, d), gradText: backToWeights(dut, ut, rt, txt, B, d) };
}

/** open_clip_train's cosine_lr: linear warmup to base_lr over `warmup` steps, then cosine decay to 0. */
export function cosineLr(step: number, baseLr: number, warmup: number, totalSteps: number): number {
  if (step < warmup) return (baseLr * (step + 1)) / warmup;
  const e = step - warmup;
  const es = totalSteps - warmup;
  return es <= 0 ? baseLr : 0.5 * (1 + Math.cos((Math.PI * e) / es)) * baseLr;
}

/** torch.optim.AdamW state of one parameter tensor. */
export interface AdamState {
  m: Float64Array;
  v: Float64Array;
  /** Steps taken so far. */
  t: number;
}

export function newAdamState(size: number): AdamState {
  return { m: new Float64Array(size), v: new Float64Array(size), t: 0 };
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One AdamW step in place, as torch.optim.AdamW (decoupled decay, bias-corrected moments). */
export function adamWStep(p: Float64Array, grad: Float64Array, s: AdamState, o: AdamWOptions): void {
  s.t += 1;
  const bc1 = 1 - Math.pow(o.beta1, s.t);
  const bc2 = 1 - Math.pow(o.beta2, s.t);
  const decay = 1 - o.lr * o.weightDecay;
  for (let k = 0; k < p.length; k++) {
    const g = grad[k];
    s.m[k] = o.beta1 * s.m[k] + (1 - o.beta1) * g;
    s.v[k] = o.beta2 * s.v[k] + (1 - o.beta2) * g * g;
    p[k] = p[k] * decay - (o.lr * (s.m[k] / bc1)) / (Math.sqrt(s.v[k] / bc2) + o.eps);
  }
}

/** Fisher–Yates permutation of 0..n-1 from `rand`. */
export function permutation(n: number, rand: () => number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
