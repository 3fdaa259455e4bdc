import type { MessagePort, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { TranscriptionResult } from '../asr/transcribe.js';
import { PoolError } from './errors.js';
import type { PoolLogger } from './log-once.js';
import { errorFromData, type AsrOutcome, type AsrTask, type AsrWorkerData } from './protocol.js';
import { MAX_TIMEOUT_MS, workerScript } from './worker-script.js';

/** The ASR worker threads: one warm engine each, `maxBatch` tasks at once per thread. */
export class AsrThreads {
  readonly piscina: Piscina;

  constructor(
    workerData: AsrWorkerData,
    workers: number,
    private readonly logger: PoolLogger,
  ) {
    this.piscina = new Piscina({
      ...workerScript('asr-worker'),
      workerData,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Infinity,
      // piscina's queue is left unbounded: admission already keeps what reaches it within capacity + MAX_QUEUE.
      concurrentTasksPerWorker: workerData.maxBatch,
      // With 'sync', an idle worker blocks in Atomics.wait and its event loop stops: the delta port it closed
      // never reports 'close' until the next task. Tasks take seconds; the faster hand-off does not matter.
      atomics: 'disabled',
      // close() destroys workers when this elapses; drain() lets every task finish first, so it never should.
      closeTimeout: MAX_TIMEOUT_MS,
    });
  }

  /** Terminating one is safe only while it is idle (never inside session.run). */
  get threads(): readonly Worker[] {
    return this.piscina.threads;
  }

  /**
   * Runs a task, passing its text deltas to `onDelta` (all of them, before this resolves). Rejects with
   * PoolError or AudioError; the worker keeps serving either way.
   */
  async run(
    task: AsrTask,
    transferList: (ArrayBuffer | MessagePort)[],
    deltas: MessagePort | undefined,
    onDelta: ((text: string) => void) | undefined,
  ): Promise<{ result: TranscriptionResult; ms: number }> {
    // The worker closes its end when the task ends; 'close' arrives after every delta it posted.
    const deltasDone = deltas ? new Promise<void>((resolve) => deltas.once('close', resolve)) : undefined;
    deltas?.on('message', (text: string) => {
      try {
        onDelta!(text);
      } catch (err) {
        this.logger.error({ err }, 'onDelta callback threw');
      }
    });
    try {
      let outcome: AsrOutcome;
      try {
        outcome = (await this.piscina.run(task, { transferList })) as AsrOutcome;
      } catch (err) {
        throw new PoolError('worker_lost', `ASR worker: ${(err as Error).message}`);
      }
      if (!outcome.ok) throw errorFromData(outcome.error);
      await deltasDone;
      return outcome;
    } finally {
      deltas?.close();
    }
  }

  close(): Promise<void> {
    return this.piscina.close();
  }
}
