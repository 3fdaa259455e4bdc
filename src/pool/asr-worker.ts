import { parentPort, threadId, workerData } from 'node:worker_threads';
import { AsrEngine } from '../asr/engine.js';
import { transcribe } from '../asr/transcribe.js';
import { SAMPLE_RATE } from '../audio/pcm.js';
import { errorToData, type AsrOutcome, type AsrTask, type AsrWorkerData, type AsrWorkerMessage } from './protocol.js';

/**
 * Piscina worker: one warm engine per thread. The default export is a Promise of the handler, which piscina
 * awaits before the first task. No top-level await: under tsx (tests), worker threads on Node 20 get only
 * tsx's require hook, and piscina require()s the module first.
 */

const data = workerData as AsrWorkerData;
const cancelFlags = new Int32Array(data.cancelFlags);
const runningFlags = new Int32Array(data.runningFlags);
const post = (m: AsrWorkerMessage) => parentPort!.postMessage(m);

/** 1 s of quiet deterministic noise: exercises every session and kernel choice before the first request. */
function warmUpAudio(): Float32Array {
  const pcm = new Float32Array(SAMPLE_RATE);
  let state = 0x2545f491;
  for (let i = 0; i < pcm.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    pcm[i] = (state / 0x1_0000_0000 - 0.5) * 0.002;
  }
  return pcm;
}

async function load(): Promise<AsrEngine> {
  try {
    const engine = await AsrEngine.load({
      modelDir: data.modelDir,
      device: data.device,
      cudaDeviceId: data.cudaDeviceId,
      intraOpThreads: data.intraOpThreads,
      ...(data.embeddings ? { embeddings: data.embeddings } : {}),
      logger: { warn: (message) => post({ type: 'asr-worker-warning', threadId, message }) },
    });
    await engine.transcribeChunk(warmUpAudio(), { maxNewTokens: 4 });
    return engine;
  } catch (err) {
    post({ type: 'asr-worker-failed', threadId, message: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

async function handle(engine: AsrEngine, task: AsrTask): Promise<AsrOutcome> {
  const { pcm, cancelIndex, port } = task;
  try {
    Atomics.store(runningFlags, cancelIndex, 1);
    const t0 = performance.now();
    const result = await transcribe(engine, pcm, {
      chunkSeconds: data.chunkSeconds,
      tokensPerSecond: data.tokensPerSecond,
      tokenBudgetBase: data.tokenBudgetBase,
      ...(data.vad ? { vad: data.vad } : {}),
      ...(task.language ? { language: task.language } : {}),
      ...(task.context ? { context: task.context } : {}),
      ...(port ? { onDelta: (d: string) => port.postMessage(d) } : {}),
      shouldStop: () => Atomics.load(cancelFlags, cancelIndex) !== 0,
    });
    return { ok: true, result, ms: performance.now() - t0 };
  } catch (err) {
    return { ok: false, error: errorToData(err) };
  } finally {
    port?.close();
  }
}

async function start(): Promise<(task: AsrTask) => Promise<AsrOutcome>> {
  const engine = await load();
  post({ type: 'asr-worker-ready', threadId });
  return (task) => handle(engine, task);
}

export default start();
