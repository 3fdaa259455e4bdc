import { MessageChannel, type Worker } from 'node:worker_threads';
import type { BackendSetting, DeviceSetting } from '../asr/engine.js';
import { ModelLoadError } from '../asr/errors.js';
import { Admissions, type Admission, type AdmissionRefusal } from './admission.js';
import { AsrThreads } from './asr-threads.js';
import { CancelSlots } from './cancel-slots.js';
import { Changes } from './changes.js';
import { DecodeThreads } from './decode-threads.js';
import { PoolError } from './errors.js';
import { LogOnce, type PoolLogger } from './log-once.js';
import type { AsrTask } from './protocol.js';
import type { Readiness } from './readiness.js';
import type { Language, Transcription } from './result.js';
import { RetryEstimate } from './retry-after.js';
import { sharedEmbeddings } from './shared-embeddings.js';
import { recordTimings, type StageRecorder } from './stages.js';
import { ownBuffer } from './worker-script.js';

export type { Admission, AdmissionRefusal } from './admission.js';
export type { PoolLogger } from './log-once.js';

export interface AsrPoolOptions {
  modelDir: string;
  device: DeviceSetting;
  /** where the decoder keeps its KV cache (engine.ts BackendSetting) */
  backend: BackendSetting;
  cudaDeviceId: number;
  intraOpThreads: number;
  /** sequences one worker decodes together (its engine may allow fewer, e.g. 1 for graphs with a fixed batch) */
  maxBatch: number;
  /** load the decoders' rewritten lean graphs where possible */
  leanGraphs: boolean;
  /** on the CPU, 4-bit matmuls with int8 activations */
  cpuInt8Matmuls: boolean;
  /** on the CPU, a float16 cache held as float32 */
  cpuFloat32Cache: boolean;
  /** ASR worker threads, each with its own warm engine */
  workers: number;
  decodeWorkers: number;
  /** admitted requests allowed to wait beyond the sequences the workers decode at once */
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
  /** receives each request's time per stage */
  stages?: StageRecorder;
  logger: PoolLogger;
}

export interface TranscribeCall {
  language?: Language;
  context?: string;
  /**
   * The answer is forced to begin with `language {language}<asr_text>{text}` (language: as a result's languages[0];
   * text: the transcript so far) and decoding continues after it. The result's text starts with exactly `text`, its
   * languages are [language], deltas carry only what follows `text`. Implies `whole`.
   */
  prefix?: { language: string; text: string };
  /** one sequence without VAD or chunking; audio past the chunk limit is refused (AudioError 'too_long') */
  whole?: boolean;
  /** receives the transcript text as it is decoded (after a prefix: only what follows it) */
  onDelta?: (text: string) => void;
  /** cancels cooperatively (queued or running); the result then says `cancelled`, `cancelReason` 'client' */
  signal?: AbortSignal;
}

export interface AsrPoolStats {
  workers: number;
  readyWorkers: number;
  /** workers running at least one transcription */
  busyWorkers: number;
  /**
   * transcriptions a worker has taken, at any stage (features, encoder, decoding, between chunks); each worker
   * takes no more than its batch
   */
  runningSequences: number;
  /** sequences the ready workers decode at once */
  capacity: number;
  admitted: number;
  /** admitted requests not taken by a worker (decoding their upload, or waiting for a place in a batch) */
  queued: number;
  draining: boolean;
}

/**
 * ASR worker threads (one warm engine each, decoding up to a batch of sequences together) and upload-decoding
 * threads, behind admission. Running inference is never interrupted: cancellation and shutdown go through the
 * admission's cancel slot, which the worker checks between decode steps.
 */
export class AsrPool {
  private readonly retry = new RetryEstimate();
  private readonly admissions: Admissions;
  private readonly readiness: Readiness;
  /** admissions whose transcription is in flight */
  private readonly active = new Set<Admission>();
  private draining = false;
  /** set once drain's grace is over: every new task starts cancelled */
  private cancelAll = false;
  private closed = false;
  private drained: Promise<void> | undefined;

  private constructor(
    private readonly o: AsrPoolOptions,
    private readonly changes: Changes,
    private readonly slots: CancelSlots,
    private readonly asr: AsrThreads,
    private readonly decoder: DecodeThreads,
  ) {
    this.readiness = asr.readiness;
    this.admissions = new Admissions({
      maxQueue: o.maxQueue,
      capacity: () => this.readiness.capacity,
      slots,
      retry: this.retry,
      onChange: () => this.changes.notify(),
    });
  }

  static async start(o: AsrPoolOptions): Promise<AsrPool> {
    const embeddings = sharedEmbeddings(o.modelDir);
    // Admissions never exceed capacity + queue; a released admission keeps its slot while its task finishes.
    const slots = new CancelSlots(2 * o.workers * o.maxBatch + o.maxQueue);
    const changes = new Changes();
    const asr = new AsrThreads(
      {
        modelDir: o.modelDir,
        device: o.device,
        backend: o.backend,
        cudaDeviceId: o.cudaDeviceId,
        intraOpThreads: o.intraOpThreads,
        maxBatch: o.maxBatch,
        leanGraphs: o.leanGraphs,
        cpuInt8Matmuls: o.cpuInt8Matmuls,
        cpuFloat32Cache: o.cpuFloat32Cache,
        ...(embeddings ? { embeddings } : {}),
        chunkSeconds: o.chunkSeconds,
        tokensPerSecond: o.tokensPerSecond,
        tokenBudgetBase: o.tokenBudgetBase,
        ...(o.vad ? { vad: o.vad } : {}),
        cells: slots.cells,
      },
      { workers: o.workers, logger: o.logger, logOnce: new LogOnce(o.logger), changes },
    );
    const decoder = new DecodeThreads({
      threads: o.decodeWorkers,
      ...(o.maxAudioSeconds !== undefined ? { maxAudioSeconds: o.maxAudioSeconds } : {}),
      ...(o.decodeTimeoutSeconds !== undefined ? { decodeTimeoutSeconds: o.decodeTimeoutSeconds } : {}),
      logger: o.logger,
    });
    return new AsrPool(o, changes, slots, asr, decoder);
  }

  /** The ASR threads (operations and tests; terminating one is safe only while it is idle). */
  get threads(): readonly Worker[] {
    return this.asr.threads;
  }

  /** Every ASR worker has its model loaded and warm, and the pool is not draining. */
  get ready(): boolean {
    return !this.draining && this.readiness.allReady;
  }

  get stats(): AsrPoolStats {
    const runningOn = [...this.active].map((a) => this.slots.thread(a.slot)).filter((t) => t !== 0);
    const admitted = this.admissions.admitted;
    return {
      workers: this.o.workers,
      readyWorkers: this.readiness.readyWorkers,
      busyWorkers: new Set(runningOn).size,
      runningSequences: runningOn.length,
      capacity: this.readiness.capacity,
      admitted,
      queued: Math.max(0, admitted - runningOn.length),
      draining: this.draining,
    };
  }

  /**
   * Resolves once every worker is warm (no limit without `timeoutMs`). Rejects with the worker's
   * ModelLoadError when the model cannot load (piscina then stops respawning it).
   */
  async waitUntilReady(timeoutMs?: number): Promise<void> {
    const settled = await this.changes.until(() => this.readiness.loadError !== undefined || this.readiness.allReady, timeoutMs);
    if (this.readiness.loadError) throw this.readiness.loadError;
    if (!settled) throw new ModelLoadError(`ASR workers were not ready within ${timeoutMs} ms`);
  }

  /** Called before reading an upload; the admission is held until the response is over. */
  admit(): Admission | AdmissionRefusal {
    return this.admissions.admit();
  }

  /**
   * Upload bytes -> 16 kHz mono PCM in a decode thread. `bytes` is transferred (detached afterwards) when it
   * spans its whole buffer, else copied. Bad audio rejects with an AudioError.
   */
  async decode(bytes: Uint8Array): Promise<Float32Array> {
    if (this.closed) throw new PoolError('closed', 'the ASR pool is closed');
    const t0 = performance.now();
    const pcm = await this.decoder.decode(bytes);
    this.o.stages?.observeStage('audio_decode', (performance.now() - t0) / 1000);
    return pcm;
  }

  /**
   * Transcribes in an ASR worker under `admission` (its cancel slot). `pcm`'s buffer is transferred, so `pcm` is
   * detached afterwards (a view of part of a larger buffer is copied instead). Resolves with the result (which
   * says `cancelled` and why after an abort or a shutdown) or rejects with PoolError/AudioError; the worker keeps
   * serving either way.
   */
  async transcribe(admission: Admission, pcm: Float32Array, call: TranscribeCall = {}): Promise<Transcription> {
    if (this.closed) throw new PoolError('closed', 'the ASR pool is closed');
    admission.begin();
    const { slot } = admission;
    // Never given to piscina: it would terminate a running worker, which aborts the process inside session.run.
    const cancel = () => this.slots.cancel(slot, 'client');
    this.active.add(admission);
    try {
      this.slots.clear(slot);
      if (this.cancelAll) this.slots.cancel(slot, 'shutdown');
      if (call.signal?.aborted) cancel();
      call.signal?.addEventListener('abort', cancel, { once: true });
      const channel = call.onDelta ? new MessageChannel() : undefined;
      const { view, transfer } = ownBuffer(pcm, (p) => p.slice());
      const task: AsrTask = {
        pcm: view,
        slot,
        ...(call.language ? { language: call.language } : {}),
        ...(call.context ? { context: call.context } : {}),
        ...(call.prefix ? { prefix: { language: call.prefix.language, text: call.prefix.text } } : {}),
        ...(call.whole ? { whole: true } : {}),
        ...(channel ? { port: channel.port2 } : {}),
      };
      const { result, ms } = await this.asr.run(task, channel ? [...transfer, channel.port2] : transfer, channel?.port1, call.onDelta);
      // The worker stops early only when the cell holds a reason, so there is one to read.
      if (result.cancelled) return { ...result, cancelReason: this.slots.reason(slot) ?? 'client' };
      this.retry.record(ms);
      if (this.o.stages) recordTimings(this.o.stages, result.timings);
      return result;
    } finally {
      call.signal?.removeEventListener('abort', cancel);
      this.active.delete(admission);
      if (admission.end()) this.slots.give(slot);
      this.changes.notify();
    }
  }

  /**
   * Stops admitting, lets admitted requests finish for up to `graceMs`, then cancels running and queued
   * tasks between decode steps (reason 'shutdown'), waits for them and closes both thread pools with no
   * worker busy.
   */
  drain(graceMs: number): Promise<void> {
    this.drained ??= this.drainOnce(graceMs);
    return this.drained;
  }

  private async drainOnce(graceMs: number): Promise<void> {
    this.draining = true;
    this.admissions.close();
    this.o.logger.info({ graceMs, ...this.stats }, 'ASR pool draining');
    await this.changes.until(() => this.admissions.admitted === 0 && this.active.size === 0, graceMs);
    this.cancelAll = true;
    for (const admission of this.active) this.slots.cancel(admission.slot, 'shutdown');
    // A worker still loading is inside onnxruntime (session creation or its warm-up run): never terminate it.
    await this.changes.until(() => this.active.size === 0 && this.readiness.noneLoading);
    this.closed = true;
    this.readiness.stop();
    await Promise.all([this.asr.close(), this.decoder.close()]);
    this.o.logger.info('ASR pool closed');
  }
}
