import { parentPort, threadId, workerData } from 'node:worker_threads';
import { AsrEngine } from '../asr/engine.js';
import { transcribe } from '../asr/transcribe.js';
import { errorToData, type AsrOutcome, type AsrTask, type AsrWorkerData, type AsrWorkerMessage } from './protocol.js';

/**
 * Piscina worker: one warm engine per thread, running up to its batch of transcriptions at once (piscina hands
 * it up to MAX_BATCH tasks; the engine decodes their sequences together). The default export is a Promise of
 * the handler, which piscina awaits before the first task. No top-level await: under tsx (tests), worker
 * threads on Node 20 get only tsx's require hook, and piscina require()s the module first.
 */

const data = workerData as AsrWorkerData;
const cancelFlags = new Int32Array(data.cells.cancel);
const runningOn = new Int32Array(data.cells.running);
const post = (m: AsrWorkerMessage) => parentPort!.postMessage(m);

/**
 * Lets `size` tasks into the engine at once; the rest wait their turn here, not marked running, so the
 * pool counts them as queued (an engine whose graphs fix the batch at 1 decodes one sequence at a time).
 */
class Gate {
  private inside = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async enter(): Promise<void> {
    if (this.inside < this.size) {
      this.inside++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** hands the place straight to the next waiter, if any */
  leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.inside--;
  }
}

async function load(): Promise<AsrEngine> {
  try {
    const engine = await AsrEngine.load({
      modelDir: data.modelDir,
      device: data.device,
      cudaDeviceId: data.cudaDeviceId,
      intraOpThreads: data.intraOpThreads,
      maxBatch: data.maxBatch,
      leanGraphs: data.leanGraphs,
      ...(data.embeddings ? { embeddings: data.embeddings } : {}),
      logger: {
        info: (message) => post({ type: 'asr-worker-log', threadId, level: 'info', message }),
        warn: (message) => post({ type: 'asr-worker-log', threadId, level: 'warn', message }),
      },
    });
    await engine.warmUp();
    return engine;
  } catch (err) {
    post({ type: 'asr-worker-failed', threadId, message: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

async function handle(engine: AsrEngine, gate: Gate, task: AsrTask): Promise<AsrOutcome> {
  const { pcm, slot, port } = task;
  try {
    await gate.enter();
    try {
      Atomics.store(runningOn, slot, threadId);
      const t0 = performance.now();
      const result = await transcribe(engine, pcm, {
        chunkSeconds: data.chunkSeconds,
        tokensPerSecond: data.tokensPerSecond,
        tokenBudgetBase: data.tokenBudgetBase,
        ...(data.vad ? { vad: data.vad } : {}),
        ...(task.language ? { language: task.language } : {}),
        ...(task.context ? { context: task.context } : {}),
        ...(port ? { onDelta: (d: string) => port.postMessage(d) } : {}),
        shouldStop: () => Atomics.load(cancelFlags, slot) !== 0,
      });
      return { ok: true, result, ms: performance.now() - t0 };
    } finally {
      Atomics.store(runningOn, slot, 0);
      gate.leave();
    }
  } catch (err) {
    return { ok: false, error: errorToData(err) };
  } finally {
    port?.close();
  }
}

async function start(): Promise<(task: AsrTask) => Promise<AsrOutcome>> {
  const engine = await load();
  // data.maxBatch, or 1 when the graphs fix the batch (the engine has logged why)
  const { maxBatch } = engine.batching;
  const gate = new Gate(maxBatch);
  post({ type: 'asr-worker-ready', threadId, maxBatch });
  return (task) => handle(engine, gate, task);
}

export default start();
