import type { MessagePort, Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { TranscriptionResult } from '../asr/transcribe.js';
import { PoolError } from './errors.js';
import { errorFromData, type AsrOutcome, type AsrTask, type AsrWorkerData } from './protocol.js';
import { Readiness, type ReadinessOptions } from './readiness.js';
import { MAX_TIMEOUT_MS, workerScript } from './worker-script.js';

/** piscina does not export the type of its `loadBalancer` option. */
type LoadBalancer = NonNullable<NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer']>;

/**
 * Sends a task to the least busy worker with room in its batch, or keeps it in piscina's queue (null) while
 * none has: a task handed to a worker whose engine is full would wait there even after another worker frees.
 */
function batchBalancer(batchOf: (threadId: number) => number): LoadBalancer {
  return (_task, workers) => {
    let best: (typeof workers)[number] | null = null;
    for (const worker of workers) {
      if (worker.currentUsage >= batchOf(worker.id)) continue;
      if (!best || worker.currentUsage < best.currentUsage) best = worker;
    }
    return best;
  };
}

/**
 * The ASR worker threads: one warm engine each, running as many tasks at once as that engine decodes together
 * (MAX_BATCH, or 1 when its graphs fix the batch); the rest wait in piscina's queue for the first free place.
 */
export class AsrThreads {
  readonly piscina: Piscina;
  readonly readiness: Readiness;

  constructor(
    workerData: AsrWorkerData,
    private readonly o: ReadinessOptions,
  ) {
    this.piscina = new Piscina({
      ...workerScript('asr-worker'),
      workerData,
      minThreads: o.workers,
      maxThreads: o.workers,
      idleTimeout: Infinity,
      // piscina's queue is left unbounded: admission already keeps what reaches it within capacity + MAX_QUEUE.
      // A worker's batch is known once it reports ready, which it does before piscina offers it a task;
      // until then (warm-up, or a replacement loading) it gets none.
      loadBalancer: batchBalancer((threadId) => this.readiness.batchOf(threadId)),
      // The most any worker runs at once; the balancer keeps each to its engine's batch.
      concurrentTasksPerWorker: workerData.maxBatch,
      // A task no worker can take yet goes back to the head of the queue, not the tail: first come, first served.
      stricterFIFO: true,
      // With 'sync', an idle worker blocks in Atomics.wait and its event loop stops: the delta port it closed
      // never reports 'close' until the next task. Tasks take seconds; the faster hand-off does not matter.
      atomics: 'disabled',
      // close() destroys workers when this elapses; drain() lets every task finish first, so it never should.
      closeTimeout: MAX_TIMEOUT_MS,
    });
    this.readiness = new Readiness(this.piscina, o);
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
        this.o.logger.error({ err }, 'onDelta callback threw');
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
