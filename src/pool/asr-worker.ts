import { parentPort, threadId, workerData } from 'node:worker_threads';
import { AsrEngine } from '../asr/engine.js';
import { transcribe } from '../asr/transcribe.js';
import { SileroVad } from '../audio/silero-vad.js';
import { errorToData, type AsrOutcome, type AsrTask, type AsrWorkerData, type AsrWorkerMessage } from './protocol.js';

/**
 * Piscina worker: one warm engine per thread, running up to its batch of transcriptions at once (the pool's
 * balancer hands it no more than the maxBatch it reports ready with; the engine decodes their sequences
 * together). The default export is a Promise of the handler, which piscina awaits before the first task.
 * No top-level await: under tsx (tests), worker threads on Node 20 get only tsx's require hook, and piscina
 * require()s the module first.
 */

const data = workerData as AsrWorkerData;
const cancelFlags = new Int32Array(data.cells.cancel);
const runningOn = new Int32Array(data.cells.running);
const post = (m: AsrWorkerMessage) => parentPort!.postMessage(m);

async function load(): Promise<AsrEngine> {
  try {
    const engine = await AsrEngine.load({
      modelDir: data.modelDir,
      device: data.device,
      backend: data.backend,
      cudaDeviceId: data.cudaDeviceId,
      intraOpThreads: data.intraOpThreads,
      maxBatch: data.maxBatch,
      leanGraphs: data.leanGraphs,
      cpuInt8Matmuls: data.cpuInt8Matmuls,
      cpuFloat32Cache: data.cpuFloat32Cache,
      ...(data.embeddings ? { embeddings: data.embeddings } : {}),
      logger: {
        info: (message) => post({ type: 'asr-worker-log', threadId, level: 'info', message }),
        warn: (message) => post({ type: 'asr-worker-log', threadId, level: 'warn', message }),
      },
    });
    await engine.warmUp();
    // The thread's Silero VAD, which transcribe's planChunks uses: loaded now, so a bad install fails the start.
    if (data.vad) await SileroVad.forThread();
    return engine;
  } catch (err) {
    post({ type: 'asr-worker-failed', threadId, message: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

async function handle(engine: AsrEngine, task: AsrTask): Promise<AsrOutcome> {
  const { pcm, slot, port } = task;
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
      ...(task.prefix ? { prefix: task.prefix } : {}),
      ...(task.whole ? { whole: true } : {}),
      ...(port ? { onDelta: (d: string) => port.postMessage(d) } : {}),
      shouldStop: () => Atomics.load(cancelFlags, slot) !== 0,
    });
    return { ok: true, result, ms: performance.now() - t0 };
  } catch (err) {
    return { ok: false, error: errorToData(err) };
  } finally {
    Atomics.store(runningOn, slot, 0);
    port?.close();
  }
}

async function start(): Promise<(task: AsrTask) => Promise<AsrOutcome>> {
  const engine = await load();
  // data.maxBatch, or 1 when the graphs fix the batch (the engine has logged why). Posted before the handler
  // resolves, so it reaches the pool before piscina's own ready message and the balancer's first offer.
  const { maxBatch } = engine.batching;
  post({ type: 'asr-worker-ready', threadId, maxBatch });
  return (task) => handle(engine, task);
}

export default start();
