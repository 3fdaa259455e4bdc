import { Piscina } from 'piscina';
import type { VadStream } from '../audio/silero-vad.js';
import { PoolError } from './errors.js';
import type { PoolLogger } from './log-once.js';
import { MAX_TIMEOUT_MS, workerScript } from './worker-script.js';

/** One task for the VAD thread: audio for a stream, the end of one, or a count of those it holds. */
export type VadTask =
  | { op: 'push'; stream: number; pcm: Float32Array; first: boolean }
  | { op: 'close'; stream: number }
  | { op: 'stats' };

export interface VadThreadStats {
  /** streams whose state the thread holds */
  streams: number;
}

/** A task's answer: its failure travels as data, so a rejected piscina run can only mean the thread itself. */
export type VadOutcome = { ok: true; value: Float32Array | VadThreadStats | undefined } | { ok: false; message: string };

export interface VadWorkerData {
  /** the Silero VAD model file; unset: the one in the pinned @ricky0123/vad-web */
  modelPath?: string;
}

/**
 * Silero VAD for live turns on a thread of its own, so that scoring every session's frames (a model run per
 * 32 ms of audio per session) never holds up the HTTP event loop. One thread and one model session serve every
 * stream; each stream's recurrent state and partial frame live there, keyed by a number, until it is closed.
 * Tasks run one at a time in the order they were sent (stricterFIFO below), so a stream's close, sent after its
 * last push, runs after it.
 */
export class VadThread {
  private nextId = 1;
  private closing = false;

  private constructor(private readonly piscina: Piscina) {}

  /** Starts the thread and loads the model there; rejects, with no thread left, when the model cannot be loaded. */
  static async start(logger: PoolLogger, o: VadWorkerData = {}): Promise<VadThread> {
    const piscina = new Piscina({
      ...workerScript('vad-worker'),
      workerData: o,
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Infinity,
      // As for the other pools: with 'sync' an idle worker's event loop stops.
      atomics: 'disabled',
      closeTimeout: MAX_TIMEOUT_MS,
      // By default a task piscina cannot place at once goes to the back of the queue: with one thread, a task
      // that waits behind another is overtaken by every later one (sent 0-7 at once, they ran 0 1 3 5 7 4 2 6),
      // and under a steady load it could wait for ever. With this they run in the order sent.
      stricterFIFO: true,
    });
    piscina.on('error', (err: unknown) => logger.error({ err }, 'VAD worker error'));
    const thread = new VadThread(piscina);
    try {
      await thread.stats(); // answered once the worker has loaded the model, or with why it could not
    } catch (err) {
      // The worker is idle here (a failed load leaves it answering every task with the failure): safe to end.
      await thread.close();
      throw err;
    }
    return thread;
  }

  /** A new stream with its own state on the thread; `close()` it when done. */
  stream(): VadStream {
    return new ThreadVadStream(this, this.nextId++);
  }

  async stats(): Promise<VadThreadStats> {
    return (await this.run({ op: 'stats' })) as VadThreadStats;
  }

  /** Waits for queued tasks, then ends the thread (never inside a model run). */
  close(): Promise<void> {
    this.closing = true;
    return this.piscina.close();
  }

  /**
   * @internal for ThreadVadStream. Rejects with PoolError: `inference_failed` when the task failed on the thread,
   * which keeps serving (a model run failed, or the stream's state was lost when the thread was replaced);
   * `worker_lost` when the thread died with the task on it; `closed` once close() was called.
   */
  async run(task: VadTask, transfer: ArrayBuffer[] = []): Promise<unknown> {
    // piscina would start a new thread for a task sent after close(), and load the model there for nothing
    if (this.closing) throw new PoolError('closed', 'voice activity detection has shut down');
    let outcome: VadOutcome;
    try {
      outcome = (await this.piscina.run(task, { transferList: transfer })) as VadOutcome;
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0];
      if (this.closing) throw new PoolError('closed', `voice activity detection has shut down (${reason})`);
      throw new PoolError('worker_lost', `voice activity detection: the thread was lost (${reason})`);
    }
    if (!outcome.ok) throw new PoolError('inference_failed', `voice activity detection: ${outcome.message}`);
    return outcome.value;
  }
}

class ThreadVadStream implements VadStream {
  /** the next push starts the stream's state afresh (first push, or after reset) */
  private fresh = true;
  private closed = false;

  constructor(
    private readonly thread: VadThread,
    private readonly id: number,
  ) {}

  async push(pcm: Float32Array): Promise<Float32Array> {
    if (this.closed) throw new Error('VadStream.push after close');
    // A copy goes (transferred): the caller keeps its samples.
    const copy = pcm.slice();
    const first = this.fresh;
    this.fresh = false;
    try {
      return (await this.thread.run({ op: 'push', stream: this.id, pcm: copy, first }, [copy.buffer])) as Float32Array;
    } catch (err) {
      // After a failure (a lost thread lost every state) the next push starts afresh instead of failing again.
      this.fresh = true;
      throw err;
    }
  }

  reset(): void {
    this.fresh = true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // The caller need not wait: tasks run in order, so a push still running is done before the state goes.
    this.thread.run({ op: 'close', stream: this.id }).catch(() => {});
  }
}
