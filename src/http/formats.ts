import { deflateSync } from 'node:zlib';
import type { Segment, Transcription } from '../pool/result.js';
import { openAiLanguageName } from './language-codes.js';

/** The `response_format` values served; `diarized_json` is not (the model has no speaker labels). */
export type ResponseFormat = 'json' | 'text' | 'srt' | 'vtt' | 'verbose_json';

const RESPONSE_FORMATS: readonly ResponseFormat[] = ['json', 'text', 'srt', 'vtt', 'verbose_json'];

/** OpenAI's default when the field is absent; undefined for anything unknown, so the caller can answer 400. */
export function parseResponseFormat(value: string | undefined): ResponseFormat | undefined {
  if (value === undefined) return 'json';
  return (RESPONSE_FORMATS as readonly string[]).includes(value) ? (value as ResponseFormat) : undefined;
}

const JSON_TYPE = 'application/json; charset=utf-8';
// The SDKs JSON-parse only JSON media types and return anything else as a string, which text/srt/vtt need.
const TEXT_TYPE = 'text/plain; charset=utf-8';
const VTT_TYPE = 'text/vtt; charset=utf-8';

/** Billed seconds as OpenAI reports them: rounded up (8.47 s -> 9), so any audio counts at least 1. */
export function usageSeconds(duration: number): number {
  return duration > 0 ? Math.max(1, Math.ceil(duration)) : 0;
}

/**
 * Whisper's measure (utils.compression_ratio): UTF-8 bytes over zlib-compressed bytes; above 2.4 Whisper
 * treats the text as a repetition loop. Node's zlib can differ from CPython's by a byte on short texts.
 */
export function compressionRatio(text: string): number {
  if (text === '') return 0;
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length / deflateSync(bytes).length;
}

/** OpenAI's TranscriptionSegment, key for key. */
export interface VerboseSegment {
  id: number;
  seek: number;
  start: number;
  end: number;
  text: string;
  tokens: number[];
  temperature: number;
  avg_logprob: number;
  compression_ratio: number;
  no_speech_prob: number;
}

function spoken(segments: Segment[]): Segment[] {
  return segments.filter((s) => s.text.trim() !== '');
}

function verboseSegment(s: Segment, id: number): VerboseSegment {
  return {
    id,
    // Whisper's seek is the 10 ms mel frame its decoding window started at; each segment here is its own
    // window, so that is its start in centiseconds.
    seek: Math.round(s.start * 100),
    start: s.start,
    end: s.end,
    text: s.text,
    tokens: s.tokens,
    // Decoding is greedy, never resampled at a higher temperature.
    temperature: 0,
    // Not computed: the decoder keeps no per-token log-probabilities and the model has no no-speech token.
    // 0 reads as "not failed" and "not silent" under Whisper's thresholds; empty segments are left out anyway.
    avg_logprob: 0,
    compression_ratio: compressionRatio(s.text),
    no_speech_prob: 0,
  };
}

/** HH:MM:SS<sep>mmm, rounded to the millisecond, hours always present. */
function timestamp(seconds: number, separator: ',' | '.'): string {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const pad = (n: number, width: number) => String(n).padStart(width, '0');
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor(ms / 60_000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${separator}${pad(ms % 1000, 3)}`;
}

/**
 * Cue text that cannot end a cue early (a blank line ends it) or pass for a timing line ('-->'), as
 * Whisper's writers also replace '-->' with '->'.
 */
function cueText(text: string): string {
  return text
    .split(/\r\n|\r|\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .join('\n')
    .replace(/--+>/g, '->');
}

// In WebVTT cue text '<' opens a tag and '&' a character reference; escaped, players show them literally.
function vttEscape(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

function renderSrt(segments: Segment[]): string {
  return spoken(segments)
    .map((s, i) => `${i + 1}\n${timestamp(s.start, ',')} --> ${timestamp(s.end, ',')}\n${cueText(s.text)}\n\n`)
    .join('');
}

function renderVtt(segments: Segment[]): string {
  const cues = spoken(segments).map(
    (s) => `${timestamp(s.start, '.')} --> ${timestamp(s.end, '.')}\n${vttEscape(cueText(s.text))}\n\n`,
  );
  return `WEBVTT\n\n${cues.join('')}`;
}

/**
 * OpenAI reports one language. When chunks were heard in different languages, the one carrying the most
 * text is the answer (ties: the one heard first).
 */
function dominantLanguage(result: Transcription): string {
  const weight = new Map<string, number>();
  for (const s of result.segments) {
    const text = s.text.trim();
    if (s.language && text) weight.set(s.language, (weight.get(s.language) ?? 0) + text.length);
  }
  let best = result.languages[0] ?? '';
  for (const [language, w] of weight) if (w > (weight.get(best) ?? -1)) best = language;
  return best;
}

/** The response body of a finished transcription in one of OpenAI's formats. */
export function renderTranscription(
  result: Transcription,
  format: ResponseFormat,
): { contentType: string; body: string } {
  const usage = { type: 'duration', seconds: usageSeconds(result.duration) };
  switch (format) {
    case 'json':
      return { contentType: JSON_TYPE, body: JSON.stringify({ text: result.text, usage }) };
    case 'text':
      return { contentType: TEXT_TYPE, body: `${result.text}\n` };
    case 'verbose_json':
      return {
        contentType: JSON_TYPE,
        body: JSON.stringify({
          task: 'transcribe',
          language: openAiLanguageName(dominantLanguage(result)),
          duration: result.duration,
          text: result.text,
          segments: spoken(result.segments).map(verboseSegment),
          usage,
        }),
      };
    case 'srt':
      return { contentType: TEXT_TYPE, body: renderSrt(result.segments) };
    case 'vtt':
      return { contentType: VTT_TYPE, body: renderVtt(result.segments) };
  }
}

/** One Server-Sent Events message; the SDK parses every `data:` payload as JSON. */
export function sseEvent(payload: unknown): string {
  return `data: ${JSON.stringify(payload)}\n\n`;
}

/** Optional end-of-stream sentinel: the SDK stops reading at it. */
export const SSE_DONE = 'data: [DONE]\n\n';

export interface TranscriptTextDeltaEvent {
  type: 'transcript.text.delta';
  delta: string;
}

export interface TranscriptTextDoneEvent {
  type: 'transcript.text.done';
  text: string;
  usage: {
    type: 'tokens';
    input_tokens: number;
    output_tokens: number;
    total_tokens: number;
    input_token_details: { text_tokens: number; audio_tokens: number };
  };
}

export function deltaEvent(delta: string): TranscriptTextDeltaEvent {
  return { type: 'transcript.text.delta', delta };
}

/** The final stream event; the prompt's audio tokens (one per encoder row) split the input tokens. */
export function doneEvent(result: Transcription): TranscriptTextDoneEvent {
  const { promptTokens, audioTokens, generatedTokens } = result.usage;
  return {
    type: 'transcript.text.done',
    text: result.text,
    usage: {
      type: 'tokens',
      input_tokens: promptTokens,
      output_tokens: generatedTokens,
      total_tokens: promptTokens + generatedTokens,
      input_token_details: { text_tokens: promptTokens - audioTokens, audio_tokens: audioTokens },
    },
  };
}
