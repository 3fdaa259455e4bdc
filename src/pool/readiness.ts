import type { Worker } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { ModelLoadError } from '../asr/errors.js';
import type { Changes } from './changes.js';
import type { LogOnce, PoolLogger } from './log-once.js';
import { isAsrWorkerMessage, type AsrWorkerMessage } from './protocol.js';

export interface ReadinessOptions {
  workers: number;
  logger: PoolLogger;
  logOnce: LogOnce;
  changes: Changes;
}

/**
 * Which ASR workers have their model loaded and warm, and how many sequences each decodes at once; the
 * model's load failure; workers that die (piscina replaces them without telling which).
 */
export class Readiness {
  /** threadId -> the sequences that worker's engine decodes at once */
  private readonly readyThreads = new Map<number, number>();
  private readonly watched = new WeakSet<Worker>();
  private lastWorkerError: string | undefined;
  private stopped = false;
  /** the model cannot load: piscina has stopped (or will stop) respawning workers */
  loadError: ModelLoadError | undefined;

  constructor(
    private readonly asr: Piscina,
    private readonly o: ReadinessOptions,
  ) {
    asr.on('message', (m: unknown) => {
      if (isAsrWorkerMessage(m)) this.onWorkerMessage(m);
    });
    // An 'error' event without a listener would throw in the main thread (a worker failing to load emits one).
    asr.on('error', (err: unknown) => {
      this.lastWorkerError = err instanceof Error ? err.message : String(err);
      // After a reported load failure this is piscina's retry of the import, which only obscures the cause.
      if (!this.loadError) o.logger.error({ err }, 'ASR worker error');
    });
    this.watchThreads();
  }

  /** Workers of the pool (not exited) with a warm engine. */
  get readyWorkers(): number {
    return this.live().length;
  }

  /** Sequences the ready workers decode at once: what admission lets run beside the queue. */
  get capacity(): number {
    return this.live().reduce((sum, id) => sum + this.readyThreads.get(id)!, 0);
  }

  /** Sequences worker `threadId` decodes at once; 0 until its engine is warm (or once it has exited). */
  batchOf(threadId: number): number {
    return this.readyThreads.get(threadId) ?? 0;
  }

  get allReady(): boolean {
    return this.readyWorkers === this.o.workers;
  }

  /** No thread is inside its model load (a worker still loading must never be terminated). */
  get noneLoading(): boolean {
    return this.asr.threads.every((t) => this.readyThreads.has(t.threadId));
  }

  /** Exits from now on are the pool closing, not failures. */
  stop(): void {
    this.stopped = true;
  }

  private live(): number[] {
    return this.asr.threads.map((t) => t.threadId).filter((id) => this.readyThreads.has(id));
  }

  private onWorkerMessage(m: AsrWorkerMessage): void {
    const { threadId } = m;
    if (m.type === 'asr-worker-ready') {
      this.readyThreads.set(threadId, m.maxBatch);
      this.o.logger.info({ threadId, maxBatch: m.maxBatch }, 'ASR worker ready');
    } else if (m.type === 'asr-worker-failed') {
      this.loadError ??= new ModelLoadError(m.message);
      this.o.logger.error({ threadId, error: m.message }, 'ASR worker could not load the model');
    } else {
      this.o.logOnce.line(m.level, threadId, m.message);
    }
    this.watchThreads();
    this.o.changes.notify();
  }

  private watchThreads(): void {
    for (const worker of this.asr.threads) {
      if (this.watched.has(worker)) continue;
      this.watched.add(worker);
      // threadId reads -1 once the thread has exited.
      const threadId = worker.threadId;
      worker.once('exit', (exitCode) => {
        this.readyThreads.delete(threadId);
        if (!this.stopped) {
          // piscina's own exit handler ran first: a replacement, if any, is already in `threads`.
          this.watchThreads();
          const log = { threadId, exitCode, threads: this.asr.threads.length };
          if (this.asr.threads.length === this.o.workers) {
            this.o.logger.warn(log, 'ASR worker exited; not ready until its replacement is warm');
          } else {
            // piscina stops replacing workers once one has failed while starting: the pool cannot recover.
            this.loadError ??= new ModelLoadError(`ASR worker exited with code ${exitCode} and was not replaced: ${this.lastWorkerError ?? 'no error reported'}`);
            this.o.logger.error(log, 'ASR worker exited and was not replaced');
          }
        }
        this.o.changes.notify();
      });
    }
  }
}
