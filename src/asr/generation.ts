import type { CacheHandle, DecoderBackend, PrefillInput } from './backend.js';
import type { StageLock } from './stage-lock.js';

/*
 * Greedy generation with continuous batching (transformers.js's generate(): a streamer and stopping criteria,
 * here for many sequences at once). One Generator per engine drives its backend: a sequence waits, is prefilled,
 * joins the running batch at the next step, and leaves it the moment it stops; new sequences join between steps
 * because every session run is awaited. Each prefill and each step is one stage under the engine's lock, timed
 * from when it holds it, so a step's time is its own and not the encoder's of a request that arrived meanwhile.
 */

/** When a sequence stops: a stop id, the token budget, or the caller's cancel check (read between steps). */
export interface StoppingCriteria {
  stopIds: ReadonlySet<number>;
  maxNewTokens: number;
  shouldStop?: () => boolean;
}

/** Receives each generated id as it is accepted (stop ids excluded), then end() once. */
export interface Streamer {
  put(id: number): void;
  end(): void;
}

export interface SequenceTimings {
  prefillMs: number;
  /** wall time of the decode steps this sequence took part in */
  stepsMs: number;
  steps: number;
  /** the part of stepsMs spent outside session.run */
  stepHostMs: number;
  /** sum over those steps of the batch size */
  stepRows: number;
}

export type FinishReason = 'stop' | 'budget' | 'cancel';

export class Sequence {
  /** generated ids, stop id excluded */
  readonly tokens: number[] = [];
  readonly timings: SequenceTimings = { prefillMs: 0, stepsMs: 0, steps: 0, stepHostMs: 0, stepRows: 0 };
  finish?: FinishReason;
  cache?: CacheHandle;

  constructor(
    readonly prompt: PrefillInput,
    readonly criteria: StoppingCriteria,
    readonly streamer?: Streamer,
  ) {}

  /** Takes the next id; false once the sequence has finished. */
  accept(id: number): boolean {
    if (this.criteria.stopIds.has(id)) return this.end('stop');
    this.tokens.push(id);
    this.streamer?.put(id);
    if (this.tokens.length >= this.criteria.maxNewTokens) return this.end('budget');
    if (this.criteria.shouldStop?.()) return this.end('cancel');
    return true;
  }

  /** Cancelled before its prefill (checked while it waits for a row): no model run at all. */
  cancelledWhileWaiting(): boolean {
    if (!this.criteria.shouldStop?.()) return false;
    this.end('cancel');
    return true;
  }

  private end(reason: FinishReason): false {
    this.finish = reason;
    this.streamer?.end();
    return false;
  }
}

interface Entry {
  sequence: Sequence;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class Generator {
  private waiting: Entry[] = [];
  private running: Entry[] = [];
  private looping = false;

  constructor(
    private readonly backend: DecoderBackend,
    /** rows per step, at most the backend's */
    readonly maxBatch: number,
    /** the engine's; the loop holds it only inside one prefill or step, never while waiting for work */
    private readonly lock: StageLock,
  ) {}

  /** Decodes `sequence` to its end, together with whatever else is decoding; its cache is released either way. */
  generate(sequence: Sequence): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ sequence, resolve, reject });
      if (!this.looping) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.waiting.length > 0 || this.running.length > 0) {
        await this.admit();
        if (this.running.length > 0) await this.step();
      }
    } finally {
      this.looping = false;
    }
  }

  /** Prefills waiting sequences while the batch has room; each joins the batch at the next step. */
  private async admit(): Promise<void> {
    while (this.waiting.length > 0 && this.running.length < this.maxBatch) {
      const entry = this.waiting.shift()!;
      const s = entry.sequence;
      if (s.cancelledWhileWaiting()) {
        entry.resolve();
        continue;
      }
      try {
        const { sequences, prefillMs } = await this.lock.run(async () => {
          const t0 = performance.now();
          const out = await this.backend.prefill([s.prompt]);
          return { ...out, prefillMs: performance.now() - t0 };
        });
        s.cache = sequences[0]!.cache;
        s.timings.prefillMs = prefillMs;
        if (s.accept(sequences[0]!.firstId)) this.running.push(entry);
        else this.done(entry);
      } catch (err) {
        this.done(entry, err);
      }
    }
    // Sequences still waiting for a row: a cancel ends them now rather than when a row frees up.
    this.waiting = this.waiting.filter((entry) => {
      if (!entry.sequence.cancelledWhileWaiting()) return true;
      entry.resolve();
      return false;
    });
  }

  private step(): Promise<void> {
    return this.lock.run(() => this.stepAlone());
  }

  private async stepAlone(): Promise<void> {
    const batch = this.running;
    const t0 = performance.now();
    let result;
    try {
      result = await this.backend.step(batch.map((e) => ({ cache: e.sequence.cache!, token: e.sequence.tokens.at(-1)! })));
    } catch (err) {
      this.running = [];
      for (const e of batch) this.done(e, err);
      return;
    }
    const still: Entry[] = [];
    const failed = new Map<Entry, unknown>();
    const finished: Entry[] = [];
    batch.forEach((e, i) => {
      try {
        (e.sequence.accept(result.ids[i]!) ? still : finished).push(e);
      } catch (err) {
        // A streamer that throws (its client went away badly) fails its own sequence only.
        failed.set(e, err);
      }
    });
    const wall = performance.now() - t0;
    for (const e of batch) {
      const t = e.sequence.timings;
      t.stepsMs += wall;
      t.steps += 1;
      t.stepHostMs += wall - result.runMs;
      t.stepRows += batch.length;
    }
    this.running = still;
    for (const e of finished) this.done(e);
    for (const [e, err] of failed) this.done(e, err);
  }

  private done(entry: Entry, err?: unknown): void {
    const { cache } = entry.sequence;
    if (cache) this.backend.release(cache);
    if (err === undefined) entry.resolve();
    else entry.reject(err);
  }
}
