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

/**
 * Silero VAD for live turns on a thread of its own, so that scoring every session's frames (a model run per
 * 32 ms of audio per session) never holds up the HTTP event loop. One thread and one model session serve every
 * stream; each stream's recurrent state and partial frame live there, keyed by a number, until it is closed.
 * Tasks run one at a time, but piscina does not keep their order: a stream's close is sent once its last push
 * has settled (its pushes never overlap: the caller awaits each).
 */
export class VadThread {
  private nextId = 1;

  private constructor(private readonly piscina: Piscina) {}

  /** Starts the thread and loads the model there; rejects when the model cannot be loaded. */
  static async start(logger: PoolLogger): Promise<VadThread> {
    const piscina = new Piscina({
      ...workerScript('vad-worker'),
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Infinity,
      // As for the other pools: with 'sync' an idle worker's event loop stops.
      atomics: 'disabled',
      closeTimeout: MAX_TIMEOUT_MS,
    });
    piscina.on('error', (err: unknown) => logger.error({ err }, 'VAD worker error'));
    const thread = new VadThread(piscina);
    try {
      await thread.stats(); // the worker loads the model before it takes a task
    } catch (err) {
      await piscina.close({ force: true });
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
    return this.piscina.close();
  }

  /** @internal for ThreadVadStream */
  async run(task: VadTask, transfer: ArrayBuffer[] = []): Promise<unknown> {
    try {
      return await this.piscina.run(task, { transferList: transfer });
    } catch (err) {
      throw new PoolError('worker_lost', `voice activity detection: ${(err as Error).message.split('\n')[0]}`);
    }
  }
}

class ThreadVadStream implements VadStream {
  /** the next push starts the stream's state afresh (first push, or after reset) */
  private fresh = true;
  private closed = false;
  /** the last push, settled or not: the close waits for it */
  private last: Promise<unknown> = Promise.resolve();

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
    const run = this.thread.run({ op: 'push', stream: this.id, pcm: copy, first }, [copy.buffer]);
    // After a failure (a lost thread lost every state) the next push starts afresh instead of failing again.
    this.last = run.catch(() => (this.fresh = true));
    return (await run) as Float32Array;
  }

  reset(): void {
    this.fresh = true;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // The caller need not wait: the state is dropped once a push still running is done.
    void this.last.then(() => this.thread.run({ op: 'close', stream: this.id })).catch(() => {});
  }
}
