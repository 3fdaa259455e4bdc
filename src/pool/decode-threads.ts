import { Piscina } from 'piscina';
import { DEFAULT_DECODE_LIMITS } from '../audio/decode.js';
import type { AudioError } from '../audio/errors.js';
import type { DecodeWorkerData } from './decode-worker.js';
import { PoolError } from './errors.js';
import type { PoolLogger } from './log-once.js';
import { errorFromData, type DecodeFailure, type DecodeTask } from './protocol.js';
import { MAX_TIMEOUT_MS, ownBuffer, workerScript } from './worker-script.js';

export interface DecodeThreadsOptions {
  threads: number;
  /** uploads longer than this are refused before any model work (default 7200) */
  maxAudioSeconds?: number;
  /** wall-clock limit of one ffmpeg decode (default 120) */
  decodeTimeoutSeconds?: number;
  logger: PoolLogger;
}

/** Threads that turn uploads into 16 kHz mono PCM, off the HTTP event loop and the ASR threads. */
export class DecodeThreads {
  private readonly piscina: Piscina;

  constructor(o: DecodeThreadsOptions) {
    const workerData: DecodeWorkerData = {
      decodeLimits: {
        maxSeconds: o.maxAudioSeconds ?? DEFAULT_DECODE_LIMITS.maxSeconds,
        timeoutMs: o.decodeTimeoutSeconds === undefined ? DEFAULT_DECODE_LIMITS.timeoutMs : o.decodeTimeoutSeconds * 1000,
      },
    };
    this.piscina = new Piscina({
      ...workerScript('decode-worker'),
      workerData,
      minThreads: o.threads,
      maxThreads: o.threads,
      idleTimeout: Infinity,
      // As for the ASR threads: with 'sync' an idle worker's event loop stops, so the ffmpeg capability check it
      // starts while idle never hears ffmpeg exit, times out, and every later non-WAV upload is refused.
      atomics: 'disabled',
      // First come, first decoded: piscina's default queue sends a task no thread can take yet to the back, so
      // under steady load an upload could wait behind every later one.
      stricterFIFO: true,
      closeTimeout: MAX_TIMEOUT_MS,
    });
    this.piscina.on('error', (err: unknown) => o.logger.error({ err }, 'decode worker error'));
  }

  /**
   * `bytes` is transferred (detached afterwards) when it spans its whole buffer, else copied. Bad audio
   * rejects with an AudioError, a lost thread with PoolError.
   */
  async decode(bytes: Uint8Array): Promise<Float32Array> {
    const { view, transfer } = ownBuffer(bytes, (b) => new Uint8Array(b));
    const task: DecodeTask = { bytes: view };
    let out: Float32Array | DecodeFailure;
    try {
      out = (await this.piscina.run(task, { transferList: transfer })) as Float32Array | DecodeFailure;
    } catch (err) {
      throw new PoolError('worker_lost', `decode worker: ${(err as Error).message}`);
    }
    if (out instanceof Float32Array) return out;
    throw errorFromData(out.error) as AudioError;
  }

  close(): Promise<void> {
    return this.piscina.close();
  }
}
