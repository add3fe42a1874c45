/**
 * The adapter's hand-written backward pass against central finite differences, AdamW against a
 * hand-computed step, the cosine schedule's shape, and the projection folding identity
 * (features of the folded projection == adapter applied to the base features).
 */
import {
  adamWStep,
  applyAdapter,
  contrastiveLossAndGrads,
  cosineLr,
  newAdamState,
  seededRandom,
} from '../../../server/src/finetune/adapter/math';
import { foldProjection } from '../../../server/src/finetune/adapter/fold';
import { loadCheckpoint, saveCheckpoint } from '../../../server/src/finetune/adapter/train-loop';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

function randomArray(n: number, rand: () => number, scale = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
  return a;
}

describe('adapter contrastive loss gradients', () => {
  const B = 5;
  const d = 4;
  const rand = seededRandom(7);
  const img = Float32Array.from(randomArray(B * d, rand));
  const txt = Float32Array.from(randomArray(B * d, rand));
  const params = { wImage: randomArray(d * d, rand, 0.3), wText: randomArray(d * d, rand, 0.3) };
  const scale = 14.3;

  it.each(['wImage', 'wText'] as const)('match central differences for %s', (which) => {
    const { gradImage, gradText } = contrastiveLossAndGrads(params, img, txt, B, d, scale);
    const analytic = which === 'wImage' ? gradImage : gradText;
    const h = 1e-6;
    let maxErr = 0;
    let maxAbs = 0;
    for (let k = 0; k < d * d; k++) {
      const p = params[which];
      const orig = p[k];
      p[k] = orig + h;
      const up = contrastiveLossAndGrads(params, img, txt, B, d, scale).loss;
      p[k] = orig - h;
      const down = contrastiveLossAndGrads(params, img, txt, B, d, scale).loss;
      p[k] = orig;
      const numeric = (up - down) / (2 * h);
      maxErr = Math.max(maxErr, Math.abs(numeric - analytic[k]));
      maxAbs = Math.max(maxAbs, Math.abs(numeric));
    }
    expect(maxAbs).toBeGreaterThan(1e-3); // the check is not vacuous
    expect(maxErr).toBeLessThan(1e-6 * Math.max(1, maxAbs));
  });

  it('is ln(B) for identical features at temperature 0 and zero adapters', () => {
    const same = new Float32Array(B * d).fill(1);
    const zero = { wImage: new Float64Array(d * d), wText: new Float64Array(d * d) };
    expect(contrastiveLossAndGrads(zero, same, same, B, d, 1).loss).toBeCloseTo(Math.log(B), 12);
  });

  it('applies g = x + W x', () => {
    const w = Float64Array.from([0, 1, 2, 0]); // 2×2
    expect(Array.from(applyAdapter(Float32Array.of(1, 2), 1, 2, w))).toEqual([1 + 2, 2 + 2]);
  });
});

describe('AdamW and the cosine schedule', () => {
  it('takes torch.optim.AdamW first step: p − lr·wd·p − lr·sign(g)', () => {
    const p = Float64Array.of(1, -2);
    const s = newAdamState(2);
    adamWStep(p, Float64Array.of(0.5, -3), s, { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    // Bias-corrected first step: m̂/√v̂ = g/|g|.
    expect(p[0]).toBeCloseTo(1 * (1 - 0.1 * 0.01) - 0.1, 7);
    expect(p[1]).toBeCloseTo(-2 * (1 - 0.1 * 0.01) + 0.1, 7);
    expect(s.t).toBe(1);
  });

  it('warms up linearly, peaks, and decays to zero', () => {
    expect(cosineLr(0, 1, 4, 20)).toBeCloseTo(0.25);
    expect(cosineLr(3, 1, 4, 20)).toBeCloseTo(1);
    expect(cosineLr(4, 1, 4, 20)).toBeCloseTo(1);
    expect(cosineLr(12, 1, 4, 20)).toBeCloseTo(0.5);
    expect(cosineLr(20, 1, 4, 20)).toBeCloseTo(0);
  });
});

describe('folding the adapter into the projection', () => {
  it('h @ P(I+W)ᵀ equals (I+W)(h @ P)', () => {
    const rand = seededRandom(3);
    const width = 6;
    const d = 3;
    const P = Float32Array.from(randomArray(width * d, rand));
    const W = randomArray(d * d, rand, 0.5);
    const h = randomArray(width, rand);
    const folded = foldProjection(P, width, d, W);
    const f = new Float64Array(d);
    const g = new Float64Array(d);
    for (let j = 0; j < d; j++) for (let r = 0; r < width; r++) f[j] += h[r] * P[r * d + j];
    for (let j = 0; j < d; j++) for (let r = 0; r < width; r++) g[j] += h[r] * folded[r * d + j];
    const adapted = applyAdapter(f, 1, d, W);
    for (let j = 0; j < d; j++) expect(g[j]).toBeCloseTo(adapted[j], 5);
  });
});

describe('adapter checkpoints', () => {
  it('round-trip parameters and optimizer state', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-'));
    try {
      const rand = seededRandom(1);
      const c = {
        epoch: 3,
        step: 42,
        params: { wImage: randomArray(9, rand), wText: randomArray(9, rand) },
        adamImage: { m: randomArray(9, rand), v: randomArray(9, rand), t: 42 },
        adamText: { m: randomArray(9, rand), v: randomArray(9, rand), t: 42 },
      };
      const file = path.join(dir, 'a.ckpt');
      saveCheckpoint(file, c);
      expect(loadCheckpoint(file, 9)).toEqual(c);
      expect(() => loadCheckpoint(file, 16)).toThrow(/expected 16/);
      fs.truncateSync(file, fs.statSync(file).size - 8);
      expect(() => loadCheckpoint(file, 9)).toThrow(/truncated/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
