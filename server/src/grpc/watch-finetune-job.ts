/**
 * WatchFineTuneJob: a server stream of a job's events, the backlog first, then live ones, until
 * the job ends, the client goes, or the server drains.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import type { FineTuneJobRunner, JobListener } from '../finetune/jobs';
import { TERMINAL_STATES, type JobEventRecord, type JobState } from '../store/store';
import type { CallGate } from './call-context';
import { fineTuneRpcError } from './finetune-errors';
import { eventToMessage, jobStateName } from './finetune-messages';
import { RpcError, toStatus } from './status';
import type { WatchFineTuneJobRequest__Output } from './generated/clipserve/v1/WatchFineTuneJobRequest';
import type { WatchFineTuneJobResponse } from './generated/clipserve/v1/WatchFineTuneJobResponse';

export interface WatchFineTuneJobDeps {
  runner: FineTuneJobRunner;
  gate: CallGate;
}

/** How often a watch checks for shutdown, and re-reads the store where notifications stay in one process. */
const WATCH_TICK_MS = 1000;
/** With notifications from every instance (PostgreSQL), the re-read is only a safety net: every 5 ticks. */
const SHARED_POLL_TICKS = 5;
/** Events a watch reads from the store at a time (a job may have tens of thousands). */
const WATCH_PAGE = 64;

type WatchCall = grpc.ServerWritableStream<WatchFineTuneJobRequest__Output, WatchFineTuneJobResponse>;

/** Resolves when the stream may take more writes, or the call ended. */
function writable(call: WatchCall): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      call.off('drain', done);
      call.off('cancelled', done);
      resolve();
    };
    call.on('drain', done);
    call.on('cancelled', done);
  });
}

export function watchFineTuneJobHandler({
  runner,
  gate,
}: WatchFineTuneJobDeps): grpc.handleServerStreamingCall<WatchFineTuneJobRequest__Output, WatchFineTuneJobResponse> {
  return (call) => {
    try {
      gate.enter();
    } catch (err) {
      const st = toStatus(err);
      return call.emit('error', { code: st.code, details: st.details });
    }
    void new JobWatch(call, runner, gate).start();
  };
}

/**
 * One watch. Backlog from the store, a page at a time (a job may have tens of thousands of
 * events, and twenty watchers must not read them all in one turn of the event loop; a slow
 * client's full buffer pauses the reading), then live events: woken by this instance's runner
 * when it writes them and by the store's notifications when another instance does (LISTEN/NOTIFY
 * on PostgreSQL), and re-read on a timer in case a notification was lost (every second where
 * notifications do not cross processes). Sequence numbers order and dedupe the three.
 */
class JobWatch {
  private readonly jobId: string;
  /** Sequence of the last event sent. */
  private last: number;
  /** The job's state as of the last event sent (WatchFineTuneJobResponse.state). */
  private state: JobState = 'queued';
  private exited = false;
  private unsubscribe = (): void => undefined;
  private timer: NodeJS.Timeout | undefined;
  /** One read of the store at a time; a wake during a read asks for another one after it. */
  private reading = false;
  private again = false;

  constructor(
    private readonly call: WatchCall,
    private readonly runner: FineTuneJobRunner,
    private readonly gate: CallGate,
  ) {
    this.jobId = String(call.request.jobId ?? '');
    this.last = Number(call.request.afterSequence ?? 0);
    call.on('cancelled', () => this.end());
  }

  async start(): Promise<void> {
    try {
      await this.runner.get(this.jobId); // NOT_FOUND before anything is sent
      if (this.last > 0) this.state = await this.runner.stateAt(this.jobId, this.last);
      if (this.exited) return;
      this.unsubscribe = this.runner.subscribe(this.jobId, (w) => this.onWake(w));
      this.startTimer();
      // Not awaited: with events arriving all the time the reading goes on, and the timer
      // must already be there to end the watch on shutdown.
      void this.catchUp();
    } catch (err) {
      this.end(err);
    }
  }

  /** The runner's wake-up: the event itself when this process wrote it, a bare sequence number for a notification. */
  private onWake(w: Parameters<JobListener>[0]): void {
    if (this.exited || w.sequence <= this.last) return;
    if (w.event && w.sequence === this.last + 1 && !this.reading && !this.call.writableNeedDrain) this.send(w.event);
    else if (w.event) void this.catchUp();
    // A bare number (a notification): this process's own write hands over the record itself
    // right after, so read the store only if that does not come in this turn.
    else setImmediate(() => !this.exited && w.sequence > this.last && void this.catchUp());
  }

  private startTimer(): void {
    let ticks = 0;
    const readEvery = this.runner.sharedNotifications ? SHARED_POLL_TICKS : 1;
    this.timer = setInterval(() => {
      // A watch may last hours: on shutdown, end it so the drain is not held up; the client
      // resumes elsewhere with after_sequence.
      if (this.gate.phase !== 'serving')
        return this.end(
          new RpcError(
            grpc.status.UNAVAILABLE,
            `server is shutting down: watch again with after_sequence ${this.last}`,
          ),
        );
      if (++ticks % readEvery === 0) void this.catchUp();
    }, WATCH_TICK_MS);
    this.timer.unref();
  }

  private send(ev: JobEventRecord): void {
    this.last = ev.sequence;
    if (ev.type === 'state' && typeof ev.data.state === 'string') this.state = ev.data.state as JobState;
    this.call.write({ event: eventToMessage(ev), state: jobStateName(this.state) });
    if (ev.type === 'state' && TERMINAL_STATES.has(ev.data.state as JobState)) this.end();
  }

  private async catchUp(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    try {
      do {
        this.again = false;
        if (!(await this.readBacklog())) return;
        await this.endIfFinished();
      } while (this.again && !this.exited);
    } catch (err) {
      this.end(err);
    } finally {
      this.reading = false;
    }
  }

  /** Sends the stored events after `last`, a page at a time, waiting while the client's buffer is full; false once the watch has ended. */
  private async readBacklog(): Promise<boolean> {
    for (;;) {
      if (this.exited) return false;
      const page = await this.runner.events(this.jobId, this.last, WATCH_PAGE);
      for (const ev of page) {
        if (this.exited || this.call.writableNeedDrain) break;
        if (ev.sequence === this.last + 1) this.send(ev);
      }
      if (this.exited) return false;
      if (this.call.writableNeedDrain) {
        await writable(this.call);
        continue;
      }
      if (page.length < WATCH_PAGE) return true;
      await nextTurn();
    }
  }

  /** A finished job whose terminal event was sent before after_sequence: nothing will come. */
  private async endIfFinished(): Promise<void> {
    if (this.exited || !TERMINAL_STATES.has((await this.runner.get(this.jobId)).state)) return;
    if ((await this.runner.events(this.jobId, this.last, 1)).length === 0) this.end();
    else this.again = true;
  }

  private end(err?: unknown): void {
    if (this.exited) return;
    this.exited = true;
    this.unsubscribe();
    clearInterval(this.timer);
    if (err) {
      const st = toStatus(fineTuneRpcError(err));
      this.call.emit('error', { code: st.code, details: st.details });
    } else this.call.end();
    this.gate.exit();
  }
}
