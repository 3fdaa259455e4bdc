import type { Admission, AdmissionRefusal, AsrPoolStats, TranscribeCall } from '../pool/pool.js';
import type { Transcription } from '../pool/result.js';

export type { Admission };

/** What the HTTP layer needs from the engine side; the worker pool (AsrPool) implements it. */
export interface TranscriptionBackend {
  readonly ready: boolean;
  /** true while the model is being fetched on a first start (then /ready says `downloading`) */
  readonly downloading?: boolean;
  readonly stats: AsrPoolStats;
  /** a queue place, taken once the upload has been read (and tried, then given back, before it is read) */
  admit(): Admission | AdmissionRefusal;
  /** upload bytes -> 16 kHz mono PCM, off the event loop; AudioError for bad audio */
  decode(bytes: Uint8Array): Promise<Float32Array>;
  transcribe(admission: Admission, pcm: Float32Array, call: TranscribeCall): Promise<Transcription>;
}
