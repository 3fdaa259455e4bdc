import type { TranscriptionResult } from '../asr/transcribe.js';

/**
 * What the pool hands to its callers (the HTTP layer among them): the engine's result and the language
 * vocabulary, so that nothing above the pool reaches into the engine.
 */
export type { Segment } from '../asr/transcribe.js';
export { SUPPORTED_LANGUAGES, toLanguage, type Language } from '../asr/languages.js';

/** Who stopped a transcription early: the caller (its client left) or the service shutting down. */
export type CancelReason = 'client' | 'shutdown';

export interface Transcription extends TranscriptionResult {
  /** set exactly when `cancelled` is */
  cancelReason?: CancelReason;
}

export type Timings = TranscriptionResult['timings'];
