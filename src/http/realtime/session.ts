import { randomBytes } from 'node:crypto';
import type { LiveAudioFormat, LiveConfig } from '../../live/types.js';
import type { Language } from '../../pool/result.js';
import { resolveLanguage } from '../language-codes.js';
import type { ModelIds } from '../transcription-request.js';
import type { SessionUpdate, TurnDetectionUpdate } from './client-events.js';
import { EventError } from './event-error.js';

/**
 * A transcription session's configuration as the client sees it (`session.created` / `session.updated`):
 * RealtimeTranscriptionSessionCreateResponse (resources/realtime/client-secrets.d.ts) with the audio input of
 * RealtimeTranscriptionSessionAudioInput (resources/realtime/realtime.d.ts).
 */
export interface TranscriptionSession<Format extends WireFormat = WireFormat> {
  id: string;
  object: 'realtime.transcription_session';
  type: 'transcription';
  audio: {
    input: {
      format: Format;
      /** absent when off (the SDK types it as optional, not nullable); accepted, and changes nothing here */
      noise_reduction?: { type?: 'near_field' | 'far_field'; strength?: number };
      /** AudioTranscription; `language` absent: detected per turn */
      transcription: { model: string; language?: string; prompt: string; keywords?: string[] };
      turn_detection: ServerVad | null;
    };
  };
  /** always empty: the one value OpenAI defines asks for log probabilities, which are not computed here */
  include: Array<'item.input_audio_transcription.logprobs'>;
}

/** RealtimeAudioFormats, and 16 kHz PCM as our extension (its own member, so the SDK check can set it apart). */
export type WireFormat = { type: 'audio/pcm'; rate: 24000 } | { type: 'audio/pcm'; rate: 16000 } | { type: 'audio/pcmu' } | { type: 'audio/pcma' };
export interface ServerVad {
  type: 'server_vad';
  threshold: number;
  prefix_padding_ms: number;
  silence_duration_ms: number;
}

/** OpenAI's server_vad defaults (RealtimeTranscriptionSessionAudioInputTurnDetection.ServerVad). */
const DEFAULT_SERVER_VAD: ServerVad = { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 };

const FORMATS = "audio/pcm (rate 24000, or 16000 as this server's extension), audio/pcmu or audio/pcma";

export function newSession(models: ModelIds): TranscriptionSession {
  return {
    id: `sess_${randomBytes(12).toString('base64url')}`,
    object: 'realtime.transcription_session',
    type: 'transcription',
    audio: {
      input: {
        format: { type: 'audio/pcm', rate: 24000 },
        transcription: { model: models.served, prompt: '' },
        turn_detection: { ...DEFAULT_SERVER_VAD },
      },
    },
    include: [],
  };
}

/**
 * The session after `update` (only the fields present change, as SessionUpdateEvent says), or an EventError
 * naming the first unsupported value; the session is then left as it was.
 */
export function applyUpdate(current: TranscriptionSession, update: SessionUpdate, models: ModelIds): TranscriptionSession {
  if (update.type !== 'transcription') {
    throw new EventError(
      `This endpoint serves transcription sessions: session.type must be 'transcription', not '${clip(update.type)}'.`,
      'invalid_value',
      'session.type',
    );
  }
  const input = update.audio?.input;
  const now = current.audio.input;
  const next: TranscriptionSession = structuredClone(current);
  const to = next.audio.input;
  if (input?.format !== undefined) to.format = format(input.format);
  if (input?.transcription !== undefined) {
    const t = input.transcription ?? {};
    if (t.model !== undefined && t.model !== models.served && !models.aliases.includes(t.model)) {
      throw new EventError(
        `The model '${clip(t.model)}' does not exist. This server transcribes with '${models.served}' (also accepted: ${models.aliases.join(', ') || 'no aliases'}).`,
        'model_not_found',
        'session.audio.input.transcription.model',
      );
    }
    if (t.language) language(t.language);
    // null or '' unsets the language (detected again); an absent field keeps what was there
    const lang = t.language === undefined ? now.transcription.language : t.language || undefined;
    const keywords = t.keywords ?? now.transcription.keywords;
    to.transcription = {
      model: t.model ?? now.transcription.model,
      ...(lang ? { language: lang } : {}),
      prompt: t.prompt ?? now.transcription.prompt,
      ...(keywords ? { keywords } : {}),
    };
  }
  if (input?.turn_detection !== undefined) to.turn_detection = input.turn_detection === null ? null : turnDetection(input.turn_detection, now.turn_detection);
  if (input?.noise_reduction === null) delete to.noise_reduction;
  else if (input?.noise_reduction !== undefined) to.noise_reduction = input.noise_reduction;
  if (update.include !== undefined) next.include = include(update.include ?? []);
  return next;
}

function format(f: { type?: string | undefined; rate?: number | undefined }): WireFormat {
  if (f.type === 'audio/pcm' || f.type === undefined) {
    const rate = f.rate ?? 24000;
    if (rate !== 24000 && rate !== 16000) {
      throw new EventError(`Unsupported audio/pcm rate ${rate}: use 24000 (OpenAI's) or 16000.`, 'invalid_value', 'session.audio.input.format.rate');
    }
    return { type: 'audio/pcm', rate };
  }
  if (f.type === 'audio/pcmu' || f.type === 'audio/pcma') return { type: f.type };
  throw new EventError(`Unsupported audio format '${clip(f.type)}': use ${FORMATS}.`, 'invalid_value', 'session.audio.input.format.type');
}

function language(code: string): Language {
  const l = resolveLanguage(code);
  if (!l) {
    throw new EventError(
      `Unsupported language '${clip(code)}'. Use an ISO-639-1 code (e.g. 'en') of one of the model's 30 languages, or leave it unset to detect the language.`,
      'unsupported_language',
      'session.audio.input.transcription.language',
    );
  }
  return l;
}

function turnDetection(t: TurnDetectionUpdate, now: ServerVad | null): ServerVad {
  if (t.type === 'semantic_vad') {
    throw new EventError(
      "semantic_vad is not available here: use {type: 'server_vad'} (Silero VAD with threshold, prefix_padding_ms, silence_duration_ms) or null to commit turns yourself.",
      'unsupported_turn_detection',
      'session.audio.input.turn_detection.type',
    );
  }
  if (t.type !== 'server_vad') {
    throw new EventError(`Unknown turn_detection type '${clip(t.type)}': use 'server_vad' or null.`, 'invalid_value', 'session.audio.input.turn_detection.type');
  }
  const base = now ?? DEFAULT_SERVER_VAD;
  return {
    type: 'server_vad',
    threshold: t.threshold ?? base.threshold,
    prefix_padding_ms: t.prefix_padding_ms ?? base.prefix_padding_ms,
    silence_duration_ms: t.silence_duration_ms ?? base.silence_duration_ms,
  };
}

/** Nothing can be included: the one value OpenAI defines asks for log probabilities, which we do not compute. */
function include(items: string[]): [] {
  const [first] = items;
  if (first === undefined) return [];
  if (first === 'item.input_audio_transcription.logprobs') {
    throw new EventError(
      'This server does not compute log probabilities: remove item.input_audio_transcription.logprobs from session.include.',
      'unsupported_include',
      'session.include',
    );
  }
  throw new EventError(`Unknown include value '${clip(first)}'.`, 'invalid_value', 'session.include');
}

/**
 * The live session's configuration from the wire's (its `partialSeconds` is the server's, not the client's).
 * Every field is present, an unset language or context as undefined: LiveSession.configure merges what it is
 * given, so an absent one would keep the value a session.update just removed.
 */
export function liveConfig(s: TranscriptionSession): Omit<LiveConfig, 'partialSeconds'> {
  const { format, transcription, turn_detection: td } = s.audio.input;
  const keywords = transcription.keywords?.map((k) => k.trim()).filter(Boolean) ?? [];
  const context = [transcription.prompt.trim(), keywords.length ? `Keywords: ${keywords.join(', ')}` : ''].filter(Boolean).join('\n');
  return {
    format: liveFormat(format),
    language: transcription.language ? language(transcription.language) : undefined,
    context: context || undefined,
    turnDetection: td ? { threshold: td.threshold, prefixPaddingMs: td.prefix_padding_ms, silenceDurationMs: td.silence_duration_ms } : null,
  };
}

function liveFormat(f: WireFormat): LiveAudioFormat {
  if (f.type === 'audio/pcm') return { encoding: 'pcm16', sampleRate: f.rate };
  return { encoding: f.type === 'audio/pcmu' ? 'mulaw' : 'alaw', sampleRate: 8000 };
}

/** Bytes per second of a wire format (for limits and dropped-audio accounting). */
export function bytesPerSecond(f: WireFormat): number {
  return f.type === 'audio/pcm' ? f.rate * 2 : 8000;
}

const clip = (s: string) => (s.length > 64 ? `${s.slice(0, 64)}…` : s);
