/**
 * Progress from open_clip_train's console log (src/open_clip_train/train.py), so a `full` job
 * reports steps and per-epoch validation metrics like an in-process one. Two line shapes matter:
 *
 *   Train Epoch: 3 [ 2560/20700 (12%)] Data (t): … LR: 0.000005 Logit Scale: 99.998 Contrastive_loss: 0.91 (0.93) Loss: 0.91 (0.93)
 *   Eval Epoch: 4 image_to_text_mean_rank: 2.2400\timage_to_text_median_rank: 1.0000\t…\tclip_val_loss: 0.51\tepoch: 4.0000\tnum_samples: 2300.0000
 *
 * (train.py logs every n steps and at the end of an epoch; the `Eval Epoch: N [k / n]` lines are
 * running losses, not the summary.) The logging prefix (time | level |) is ignored.
 */

export interface TrainProgress {
  kind: 'step';
  /** 0-based epoch being trained. */
  epoch: number;
  /** Samples seen this epoch over all ranks, and the epoch's size. */
  samples: number;
  samplesPerEpoch: number;
  learningRate?: number;
  loss?: number;
}

export interface EvalSummary {
  kind: 'eval';
  /** Epochs completed (open_clip evaluates after epoch N with epoch = N). */
  epoch: number;
  metrics: Record<string, number>;
}

const NUMBER = '[-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?|nan|inf';
const TRAIN_RE = new RegExp(`Train Epoch: (\\d+) \\[\\s*(\\d+)/(\\d+) \\(\\s*\\d+%\\)\\]`);
const LR_RE = new RegExp(`\\bLR: (${NUMBER})`);
const LOSS_RE = new RegExp(`(?:^|\\s)Loss: (${NUMBER})`);
const EVAL_RE = /Eval Epoch: (\d+) (?!\[)(.*)$/;
const METRIC_RE = new RegExp(`([A-Za-z_][\\w@]*): (${NUMBER})`, 'g');
/** Bookkeeping fields of the summary, not metrics. */
const NOT_METRICS = new Set(['epoch', 'num_samples']);

export function parseTrainerLine(line: string): TrainProgress | EvalSummary | undefined {
  const train = TRAIN_RE.exec(line);
  if (train) {
    const rest = line.slice(train.index + train[0].length);
    const lr = LR_RE.exec(rest);
    const loss = LOSS_RE.exec(rest);
    return {
      kind: 'step',
      epoch: Number(train[1]),
      samples: Number(train[2]),
      samplesPerEpoch: Number(train[3]),
      ...(lr ? { learningRate: Number(lr[1]) } : {}),
      ...(loss ? { loss: Number(loss[1]) } : {}),
    };
  }
  const evalMatch = EVAL_RE.exec(line);
  if (evalMatch) {
    const metrics: Record<string, number> = {};
    for (const m of evalMatch[2].matchAll(METRIC_RE)) {
      const v = Number(m[2]);
      if (!NOT_METRICS.has(m[1]) && Number.isFinite(v)) metrics[m[1]] = v;
    }
    if (Object.keys(metrics).length > 0) return { kind: 'eval', epoch: Number(evalMatch[1]), metrics };
  }
  return undefined;
}

/**
 * Optimizer steps per epoch for open_clip's CSV loader: each rank gets ceil(N / world) samples
 * (DistributedSampler pads), and the training DataLoader drops the last partial batch.
 */
export function stepsPerEpoch(trainPairs: number, batchSizePerGpu: number, worldSize: number): number {
  return Math.floor(Math.ceil(trainPairs / worldSize) / batchSizePerGpu);
}
