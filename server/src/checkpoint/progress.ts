/**
 * Progress reporting for long conversions and downloads. Readers report bytes through
 * `ReadProgress`; the CLI turns those into a cli-progress bar per phase on stderr (drawn only on
 * a terminal, so logs and tests stay clean).
 */
import { SingleBar, Presets } from 'cli-progress';

/** Bytes of tensor data read so far, out of the total. */
export type ReadProgress = (doneBytes: number, totalBytes: number) => void;

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

/**
 * One bar at a time, labelled by phase; `update(phase, done, total)` switches bars when the phase
 * changes. `stop()` must be called when the work ends (also on failure).
 */
export class PhaseProgress {
  private bar?: SingleBar;
  private phase?: string;

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update(phase: string, done: number, total: number, unit: 'bytes' | 'items' = 'bytes'): void {
    if (phase !== this.phase) {
      this.bar?.stop();
      this.phase = phase;
      const amounts = unit === 'bytes' ? '{doneMiB}/{totalMiB} MiB' : '{value}/{total}';
      this.bar = new SingleBar(
        {
          stream: this.stream,
          format: `${phase.padEnd(24)} [{bar}] {percentage}% | ${amounts} | ETA {eta_formatted}`,
          hideCursor: true,
          clearOnComplete: false,
        },
        Presets.shades_classic,
      );
      this.bar.start(Math.max(total, 1), done, { doneMiB: mib(done), totalMiB: mib(total) });
    }
    this.bar!.setTotal(Math.max(total, 1));
    this.bar!.update(done, { doneMiB: mib(done), totalMiB: mib(total) });
  }

  /** Draws a checkpoint conversion's phases: `convertCheckpoint`'s onProgress, `pullModel`'s onConvert. */
  readonly convert = (phase: 'read' | 'write', done: number, total: number): void =>
    this.update(phase === 'read' ? 'reading checkpoint' : 'writing bundle', done, total);

  /** Draws an int8 conversion's calibration passes (writeBundle's onCalibration), in samples. */
  readonly calibrate = (tower: string, pass: string, done: number, total: number): void =>
    this.update(`int8 ${pass} ${tower}`, done, total, 'items');

  /** Draws a hub download (`pullModel`'s onDownload); a file of unknown size shows as done. */
  readonly download = (p: { file: string; done: number; total?: number }): void =>
    this.update(`downloading ${p.file}`, p.done, p.total ?? p.done);

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
    this.phase = undefined;
  }
}
