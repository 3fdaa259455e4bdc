import type { TurnDetectorOptions } from '../audio/turn-detector.js';
import type { TranscribeCall } from '../pool/pool.js';
import type { Language, Transcription } from '../pool/result.js';

/**
 * The public face of a live transcription session (src/live/session.ts): what a wire protocol configures, feeds
 * and listens to. No protocol's words here; src/http/realtime maps these onto OpenAI's Realtime events.
 */

/** Input audio as the client sends it: 16-bit little-endian mono PCM at 24 or 16 kHz, or G.711 at 8 kHz. */
export type LiveAudioFormat =
  | { encoding: 'pcm16'; sampleRate: 24000 | 16000 }
  | { encoding: 'mulaw' | 'alaw'; sampleRate: 8000 };

export type { TurnDetectorOptions } from '../audio/turn-detector.js';

export interface LiveConfig {
  format: LiveAudioFormat;
  /** forces the language of every transcription (absent: the model detects it) */
  language?: Language;
  /** context for the model (the protocol joins the client's prompt and keywords) */
  context?: string;
  /** server turn detection on speech (Silero VAD); null: the client commits each turn */
  turnDetection: TurnDetectorOptions | null;
  /** seconds of new turn audio between partial re-transcriptions */
  partialSeconds: number;
}

/**
 * Transcribes one turn's audio (16 kHz mono; its buffer may be transferred) in the shared pool, under an
 * admission of its own. Rejects with TranscribeRefused when the pool has no room, or PoolError/AudioError.
 * src/live/pool-transcribe.ts makes one from an AsrPool.
 */
export type TurnTranscribe = (pcm: Float32Array, call: TranscribeCall) => Promise<Transcription>;

/** Why the pool did not take a transcription: no room now (`queue_full`, `not_ready`) or shutting down (`draining`). */
export class TranscribeRefused extends Error {
  override readonly name = 'TranscribeRefused';

  constructor(
    readonly reason: 'queue_full' | 'draining' | 'not_ready',
    readonly retryAfterSeconds: number,
  ) {
    super(`the ASR pool refused the transcription (${reason})`);
  }
}

/** Why a turn ended: the client committed it, the speaker went quiet, or it reached the maximum turn length. */
export type CommitReason = 'client' | 'silence' | 'max_length';

/** Token counts of a turn's final transcription (partials are not billed to the turn). */
export interface TurnUsage {
  /** everything the decoder was given: prompt, context, audio and forced prefix */
  inputTokens: number;
  /** audio tokens among them */
  audioTokens: number;
  /** tokens the final decoded */
  outputTokens: number;
}

/**
 * What a session reports, in order. Every turn has an `itemId` (`item_` + random) from its first event on.
 * A turn's deltas come before its `completed`, and joined they equal its transcript; turns are independent, so a
 * turn's `completed` may come after the next turn's events (match by itemId).
 */
export type LiveEvent =
  /** server turn detection heard speech; the turn's audio starts at audioStartMs (prefix padding included) */
  | { type: 'speechStarted'; itemId: string; audioStartMs: number }
  /** server turn detection heard the speech end (or the turn reached its maximum length) at audioEndMs */
  | { type: 'speechStopped'; itemId: string; audioEndMs: number }
  /** the turn's audio is final; its transcription follows */
  | { type: 'committed'; itemId: string; previousItemId: string | null; reason: CommitReason }
  /**
   * Newly stable text of the turn, appended to what came before (never retracted).
   * latencyMs (partial latency): text becomes stable when two consecutive partials agree on it; this is the time
   * from the arrival (append) of the last audio sample covered by the earlier of the two, which first proposed
   * the text, to this delta's emission: the cadence, plus the later partial's wait and run time. Absent on the
   * final tail, whose latency is `completed.finalLatencyMs`.
   */
  | { type: 'delta'; itemId: string; text: string; latencyMs?: number }
  | {
      type: 'completed';
      itemId: string;
      /** every delta of the turn joined */
      transcript: string;
      /** the language the model heard ('English', ...), when it said */
      language?: string;
      audioSeconds: number;
      usage: TurnUsage;
      /** from the end of the turn (arrival of the audio that ended it, or the client's commit) to this event */
      finalLatencyMs: number;
    }
  /** the turn's final transcription could not run (e.g. the service is shutting down) */
  | { type: 'failed'; itemId: string; message: string }
  /** uncommitted audio was dropped; itemId: the turn it discarded, if one had started */
  | { type: 'cleared'; itemId?: string }
  /**
   * the session could not process some audio (turn detection failed on it; no code), or a command could not be
   * carried out once its turn came (a commit finding the server had just ended the turn: code buffer_too_small);
   * it goes on with the next
   */
  | { type: 'error'; message: string; code?: LiveErrorCode };

export type LiveListener = (event: LiveEvent) => void;

export type LiveErrorCode =
  /** commit with less than 100 ms of uncommitted audio (OpenAI: "buffer too small. Expected at least 100ms of audio") */
  | 'buffer_too_small'
  /** the session is closed */
  | 'closed'
  /** server turn detection asked for but this session has no voice activity detector */
  | 'turn_detection_unavailable'
  /** a configuration value out of range (turn detection parameters, partialSeconds) */
  | 'invalid_config';

/** A request the session refuses; the protocol reports it to its client. */
export class LiveError extends Error {
  override readonly name = 'LiveError';

  constructor(
    readonly code: LiveErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Counters for benches and metrics, cumulative over the session. */
export interface LiveStats {
  /** turns committed (by any reason) */
  turns: number;
  /** partial transcriptions started */
  partials: number;
  /** partials the pool refused (skipped) */
  partialsRefused: number;
  /** partials that failed for another reason (skipped: the final still runs; the session's close log has the count) */
  partialsFailed: number;
  /** input audio dropped, in seconds of 16 kHz audio: appended after close or beyond the backlog limit */
  droppedSeconds: number;
}

export interface LiveSessionOptions {
  transcribe: TurnTranscribe;
  /** a fresh VAD stream for this session's turn detector (absent: only client commits) */
  vadStream?: () => import('../audio/silero-vad.js').VadStream;
  config?: Partial<LiveConfig>;
  /** a turn is committed when it reaches this length (default 28 s, under the engine's 30 s chunk) */
  maxTurnSeconds?: number;
  /** audio waiting for turn detection beyond this is dropped (default 10 s) */
  maxBacklogSeconds?: number;
  /** partial seconds default (REALTIME_PARTIAL_SECONDS) */
  partialSeconds?: number;
}

export type { TranscribeCall };
