import type { Admission, AdmissionRefusal, AsrPool, AsrPoolStats, TranscribeCall } from './pool.js';
import type { Transcription } from './result.js';

/** While the model downloads, clients are told to come back later than a warm-up would take. */
const DOWNLOADING_RETRY_SECONDS = 30;

/**
 * The backend the HTTP app serves from the moment it listens: not ready (and refusing work) until the model
 * is on disk and the pool exists, then the pool itself. So /health answers during a first-start download.
 */
export class PendingBackend {
  private pool: AsrPool | undefined;
  private draining = false;
  /** set by the server while it fetches the model */
  downloading = false;

  constructor(private readonly workers: number) {}

  /** The pool, once started; when a drain came first it is drained at once. */
  attach(pool: AsrPool): void {
    this.pool = pool;
    if (this.draining) void pool.drain(0);
  }

  get current(): AsrPool | undefined {
    return this.pool;
  }

  get ready(): boolean {
    return this.pool?.ready ?? false;
  }

  get stats(): AsrPoolStats {
    return (
      this.pool?.stats ?? {
        workers: this.workers,
        readyWorkers: 0,
        busyWorkers: 0,
        runningSequences: 0,
        capacity: 0,
        admitted: 0,
        queued: 0,
        draining: this.draining,
      }
    );
  }

  admit(): Admission | AdmissionRefusal {
    if (this.pool) return this.pool.admit();
    return { refused: this.draining ? 'draining' : 'not_ready', retryAfterSeconds: DOWNLOADING_RETRY_SECONDS };
  }

  decode(bytes: Uint8Array): Promise<Float32Array> {
    return this.started().decode(bytes);
  }

  transcribe(admission: Admission, pcm: Float32Array, call: TranscribeCall): Promise<Transcription> {
    return this.started().transcribe(admission, pcm, call);
  }

  drain(graceMs: number): Promise<void> {
    this.draining = true;
    return this.pool?.drain(graceMs) ?? Promise.resolve();
  }

  /** admit() refuses until the pool exists, so nothing reaches here before it. */
  private started(): AsrPool {
    if (!this.pool) throw new Error('the model is not loaded yet');
    return this.pool;
  }
}
