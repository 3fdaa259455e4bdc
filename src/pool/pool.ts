import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort, type Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { findEmbeddingFiles, loadEmbeddingTableOnce } from '../asr/embeddings.js';
import type { DeviceSetting } from '../asr/engine.js';
import { InferenceError, ModelLoadError } from '../asr/errors.js';
import type { Language } from '../asr/languages.js';
import type { TranscriptionResult } from '../asr/transcribe.js';
import { DEFAULT_DECODE_LIMITS } from '../audio/decode.js';
import type { DecodeWorkerData } from './decode-worker.js';
import {
  errorFromData,
  isAsrWorkerMessage,
  type AsrOutcome,
  type AsrTask,
  type AsrWorkerData,
  type AsrWorkerMessage,
  type DecodeFailure,
  type DecodeTask,
} from './protocol.js';

type LogFn = (obj: object | string, msg?: string) => void;

/** pino-compatible */
export interface PoolLogger {
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

export interface AsrPoolOptions {
  modelDir: string;
  device: DeviceSetting;
  cudaDeviceId: number;
  intraOpThreads: number;
  /** ASR worker threads, each with its own warm engine */
  workers: number;
  decodeWorkers: number;
  /** admitted requests allowed to wait beyond the `workers` running ones */
  maxQueue: number;
  chunkSeconds: number;
  tokensPerSecond: number;
  tokenBudgetBase: number;
  /** voice activity detection before the model (absent: the reference pipeline) */
  vad?: { maxSegmentSeconds: number };
  /** uploads longer than this are refused before any model work (default 7200) */
  maxAudioSeconds?: number;
  /** wall-clock limit of one ffmpeg decode (default 120) */
  decodeTimeoutSeconds?: number;
  logger: PoolLogger;
}

export interface Admission {
  /** idempotent */
  release(): void;
}

export interface AdmissionRefusal {
  refused: 'queue_full' | 'draining' | 'not_ready';
  /** integer in [1, 60] */
  retryAfterSeconds: number;
}

export interface TranscribeCall {
  language?: Language;
  context?: string;
  onDelta?: (text: string) => void;
  /** cancels cooperatively (queued or running); the result then says `cancelled` */
  signal?: AbortSignal;
}

export interface AsrPoolStats {
  workers: number;
  readyWorkers: number;
  busyWorkers: number;
  admitted: number;
  /** admitted requests not running on a worker */
  queued: number;
  draining: boolean;
}

/** setTimeout clamps larger delays (Infinity included) to 1 ms, so this is the longest real timeout. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** before any task has finished */
const INITIAL_TASK_MS = 5000;
const NOT_READY_RETRY_SECONDS = 5;

/** Tests run the sources (tsx in the worker threads too); the build runs the compiled .js next to this file. */
function workerScript(name: string): { filename: string; execArgv?: string[] } {
  const ts = import.meta.url.endsWith('.ts');
  const filename = fileURLToPath(new URL(`./${name}.${ts ? 'ts' : 'js'}`, import.meta.url));
  return ts ? { filename, execArgv: ['--import', 'tsx'] } : { filename };
}

/** The view itself when it spans its buffer (transferred, so the caller's view is detached), else a copy. */
function ownBuffer<T extends Uint8Array | Float32Array>(view: T, copy: (v: T) => T): { view: T; transfer: ArrayBuffer[] } {
  const whole = view.buffer instanceof ArrayBuffer && view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  const own = whole ? view : copy(view);
  return { view: own, transfer: [own.buffer as ArrayBuffer] };
}

const clampRetry = (seconds: number) => Math.min(60, Math.max(1, Math.ceil(seconds)));

/**
 * ASR worker threads (one warm engine each) and upload-decoding threads. Running inference is never
 * interrupted: cancellation and shutdown go through per-task flags the worker checks between decode steps.
 */
export class AsrPool {
  private readonly readyThreads = new Set<number>();
  private readonly warned = new Set<string>();
  private readonly watched = new WeakSet<Worker>();
  private readonly listeners = new Set<() => void>();
  private readonly freeSlots: number[];
  /** cancel slots of the tasks in flight */
  private readonly active = new Set<number>();
  private loadError: ModelLoadError | undefined;
  private lastWorkerError: string | undefined;
  private admittedCount = 0;
  private avgTaskMs = INITIAL_TASK_MS;
  private taskSamples = 0;
  private draining = false;
  /** set once drain's grace is over: every new task starts cancelled */
  private cancelAll = false;
  private closed = false;
  private drained: Promise<void> | undefined;

  private constructor(
    private readonly o: AsrPoolOptions,
    private readonly asr: Piscina,
    private readonly decoder: Piscina,
    private readonly cancelFlags: Int32Array,
    private readonly runningFlags: Int32Array,
  ) {
    this.freeSlots = Array.from({ length: cancelFlags.length }, (_, i) => i);
    asr.on('message', (m: unknown) => {
      if (isAsrWorkerMessage(m)) this.onWorkerMessage(m);
    });
    // An 'error' event without a listener would throw in the main thread (a worker failing to load emits one).
    asr.on('error', (err: unknown) => {
      this.lastWorkerError = err instanceof Error ? err.message : String(err);
      // After a reported load failure this is piscina's retry of the import, which only obscures the cause.
      if (!this.loadError) o.logger.error({ err }, 'ASR worker error');
    });
    decoder.on('error', (err: unknown) => o.logger.error({ err }, 'decode worker error'));
    this.watchThreads();
  }

  static async start(o: AsrPoolOptions): Promise<AsrPool> {
    const [embeddingFile] = findEmbeddingFiles(o.modelDir);
    const embeddings = embeddingFile ? loadEmbeddingTableOnce(embeddingFile) : undefined;
    // Tasks in piscina never exceed running + queued + one per replacement worker still loading.
    const slots = 2 * o.workers + o.maxQueue + 4;
    const cancelFlags = new SharedArrayBuffer(slots * Int32Array.BYTES_PER_ELEMENT);
    const runningFlags = new SharedArrayBuffer(slots * Int32Array.BYTES_PER_ELEMENT);
    const workerData: AsrWorkerData = {
      modelDir: o.modelDir,
      device: o.device,
      cudaDeviceId: o.cudaDeviceId,
      intraOpThreads: o.intraOpThreads,
      ...(embeddings ? { embeddings } : {}),
      chunkSeconds: o.chunkSeconds,
      tokensPerSecond: o.tokensPerSecond,
      tokenBudgetBase: o.tokenBudgetBase,
      ...(o.vad ? { vad: o.vad } : {}),
      cancelFlags,
      runningFlags,
    };
    const asr = new Piscina({
      ...workerScript('asr-worker'),
      workerData,
      minThreads: o.workers,
      maxThreads: o.workers,
      idleTimeout: Infinity,
      maxQueue: o.maxQueue,
      concurrentTasksPerWorker: 1,
      // With 'sync', an idle worker blocks in Atomics.wait and its event loop stops: the delta port it closed
      // never reports 'close' until the next task. Tasks take seconds; the faster hand-off does not matter.
      atomics: 'disabled',
      // close() destroys workers when this elapses; drain() lets every task finish first, so it never should.
      closeTimeout: MAX_TIMEOUT_MS,
    });
    const decodeData: DecodeWorkerData = {
      decodeLimits: {
        maxSeconds: o.maxAudioSeconds ?? DEFAULT_DECODE_LIMITS.maxSeconds,
        timeoutMs: o.decodeTimeoutSeconds === undefined ? DEFAULT_DECODE_LIMITS.timeoutMs : o.decodeTimeoutSeconds * 1000,
      },
    };
    const decoder = new Piscina({
      ...workerScript('decode-worker'),
      workerData: decodeData,
      minThreads: o.decodeWorkers,
      maxThreads: o.decodeWorkers,
      idleTimeout: Infinity,
      // As for the ASR pool: with 'sync' an idle worker's event loop stops, so the ffmpeg capability check it
      // starts while idle never hears ffmpeg exit, times out, and every later non-WAV upload is refused.
      atomics: 'disabled',
      closeTimeout: MAX_TIMEOUT_MS,
    });
    return new AsrPool(o, asr, decoder, new Int32Array(cancelFlags), new Int32Array(runningFlags));
  }

  /** The ASR threads (operations and tests; terminating one is safe only while it is idle). */
  get threads(): readonly Worker[] {
    return this.asr.threads;
  }

  /** Every ASR worker has its model loaded and warm, and the pool is not draining. */
  get ready(): boolean {
    return !this.draining && this.readyWorkers === this.o.workers;
  }

  get stats(): AsrPoolStats {
    const busyWorkers = [...this.active].filter((slot) => Atomics.load(this.runningFlags, slot) !== 0).length;
    return {
      workers: this.o.workers,
      readyWorkers: this.readyWorkers,
      busyWorkers,
      admitted: this.admittedCount,
      queued: Math.max(0, this.admittedCount - busyWorkers),
      draining: this.draining,
    };
  }

  private get readyWorkers(): number {
    return this.asr.threads.filter((t) => this.readyThreads.has(t.threadId)).length;
  }

  /**
   * Resolves once every worker is warm (no limit without `timeoutMs`). Rejects with the worker's
   * ModelLoadError when the model cannot load (piscina then stops respawning it).
   */
  async waitUntilReady(timeoutMs?: number): Promise<void> {
    const settled = await this.until(() => this.loadError !== undefined || this.readyWorkers === this.o.workers, timeoutMs);
    if (this.loadError) throw this.loadError;
    if (!settled) throw new ModelLoadError(`ASR workers were not ready within ${timeoutMs} ms`);
  }

  /** Called before reading an upload; counts requests from admission to their response, not piscina's queue. */
  admit(): Admission | AdmissionRefusal {
    if (this.draining) return { refused: 'draining', retryAfterSeconds: this.retryAfter() };
    if (this.readyWorkers === 0) return { refused: 'not_ready', retryAfterSeconds: NOT_READY_RETRY_SECONDS };
    if (this.admittedCount >= this.asr.threads.length + this.o.maxQueue) {
      return { refused: 'queue_full', retryAfterSeconds: this.retryAfter() };
    }
    this.admittedCount++;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.admittedCount--;
        this.notify();
      },
    };
  }

  /** Seconds until the requests admitted ahead have been through the workers, from recent task durations. */
  private retryAfter(): number {
    const workers = Math.max(1, this.asr.threads.length);
    const ahead = Math.max(1, this.admittedCount - workers + 1);
    return clampRetry((ahead * this.avgTaskMs) / workers / 1000);
  }

  /**
   * Upload bytes -> 16 kHz mono PCM in a decode thread. `bytes` is transferred (detached afterwards) when it
   * spans its whole buffer, else copied. Bad audio rejects with an AudioError.
   */
  async decode(bytes: Uint8Array): Promise<Float32Array> {
    if (this.closed) throw new InferenceError('the ASR pool is closed');
    const { view, transfer } = ownBuffer(bytes, (b) => new Uint8Array(b));
    const task: DecodeTask = { bytes: view };
    let out: Float32Array | DecodeFailure;
    try {
      out = (await this.decoder.run(task, { transferList: transfer })) as Float32Array | DecodeFailure;
    } catch (err) {
      throw new InferenceError(`decode worker: ${(err as Error).message}`);
    }
    if (out instanceof Float32Array) return out;
    throw errorFromData(out.error);
  }

  /**
   * Transcribes in an ASR worker. `pcm`'s buffer is transferred, so `pcm` is detached afterwards (a view of
   * part of a larger buffer is copied instead). Resolves with the result (which says `cancelled` after an
   * abort) or rejects with InferenceError/AudioError; the worker keeps serving either way.
   */
  async transcribe(pcm: Float32Array, call: TranscribeCall = {}): Promise<TranscriptionResult> {
    if (this.closed) throw new InferenceError('the ASR pool is closed');
    const slot = this.freeSlots.pop();
    if (slot === undefined) throw new InferenceError('too many transcriptions in flight');
    Atomics.store(this.runningFlags, slot, 0);
    Atomics.store(this.cancelFlags, slot, this.cancelAll || call.signal?.aborted ? 1 : 0);
    // Never given to piscina: it would terminate a running worker, which aborts the process inside session.run.
    const cancel = () => Atomics.store(this.cancelFlags, slot, 1);
    call.signal?.addEventListener('abort', cancel, { once: true });
    const channel = call.onDelta ? new MessageChannel() : undefined;
    const { view, transfer } = ownBuffer(pcm, (p) => p.slice());
    const task: AsrTask = {
      pcm: view,
      cancelIndex: slot,
      ...(call.language ? { language: call.language } : {}),
      ...(call.context ? { context: call.context } : {}),
      ...(channel ? { port: channel.port2 } : {}),
    };
    this.active.add(slot);
    try {
      return await this.runTask(task, channel ? [...transfer, channel.port2] : transfer, channel?.port1, call.onDelta);
    } finally {
      call.signal?.removeEventListener('abort', cancel);
      this.active.delete(slot);
      this.freeSlots.push(slot);
      this.notify();
    }
  }

  private async runTask(
    task: AsrTask,
    transferList: (ArrayBuffer | MessagePort)[],
    deltas: MessagePort | undefined,
    onDelta: ((text: string) => void) | undefined,
  ): Promise<TranscriptionResult> {
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
        outcome = (await this.asr.run(task, { transferList })) as AsrOutcome;
      } catch (err) {
        throw new InferenceError(`ASR worker: ${(err as Error).message}`);
      }
      if (!outcome.ok) throw errorFromData(outcome.error);
      if (!outcome.result.cancelled) this.recordTaskMs(outcome.ms);
      await deltasDone;
      return outcome.result;
    } finally {
      deltas?.close();
    }
  }

  private recordTaskMs(ms: number): void {
    this.taskSamples++;
    this.avgTaskMs = this.taskSamples === 1 ? ms : this.avgTaskMs + 0.2 * (ms - this.avgTaskMs);
  }

  /**
   * Stops admitting, lets admitted requests finish for up to `graceMs`, then cancels running and queued
   * tasks between decode steps, waits for them and closes both pools with no worker busy.
   */
  drain(graceMs: number): Promise<void> {
    this.drained ??= this.drainOnce(graceMs);
    return this.drained;
  }

  private async drainOnce(graceMs: number): Promise<void> {
    this.draining = true;
    this.o.logger.info({ graceMs, ...this.stats }, 'ASR pool draining');
    await this.until(() => this.admittedCount === 0 && this.active.size === 0, graceMs);
    this.cancelAll = true;
    for (const slot of this.active) Atomics.store(this.cancelFlags, slot, 1);
    // A worker still loading is inside onnxruntime (session creation or its warm-up run): never terminate it.
    await this.until(() => this.active.size === 0 && this.asr.threads.every((t) => this.readyThreads.has(t.threadId)));
    this.closed = true;
    await Promise.all([this.asr.close(), this.decoder.close()]);
    this.o.logger.info('ASR pool closed');
  }

  private onWorkerMessage(m: AsrWorkerMessage): void {
    const { threadId } = m;
    if (m.type === 'asr-worker-ready') {
      this.readyThreads.add(threadId);
      this.o.logger.info({ threadId }, 'ASR worker ready');
    } else if (m.type === 'asr-worker-failed') {
      this.loadError ??= new ModelLoadError(m.message);
      this.o.logger.error({ threadId, error: m.message }, 'ASR worker could not load the model');
    } else if (!this.warned.has(m.message)) {
      // Every worker makes the same device probe: one line per distinct warning, not one per worker.
      this.warned.add(m.message);
      this.o.logger.warn({ threadId }, m.message);
    }
    this.watchThreads();
    this.notify();
  }

  /** Piscina replaces a dead worker without telling us which; watch every thread's exit ourselves. */
  private watchThreads(): void {
    for (const worker of this.asr.threads) {
      if (this.watched.has(worker)) continue;
      this.watched.add(worker);
      // threadId reads -1 once the thread has exited.
      const threadId = worker.threadId;
      worker.once('exit', (exitCode) => {
        this.readyThreads.delete(threadId);
        if (!this.closed) {
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
        this.notify();
      });
    }
  }

  private notify(): void {
    for (const check of [...this.listeners]) check();
  }

  /** Resolves true once `done()` holds (checked on every state change), false after `timeoutMs`. */
  private until(done: () => boolean, timeoutMs?: number): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(ok);
      };
      const check = () => {
        if (done()) finish(true);
      };
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => finish(false), Math.min(timeoutMs, MAX_TIMEOUT_MS));
      this.listeners.add(check);
      check();
    });
  }
}
