import { splitAudioIntoChunks, type AudioChunk } from '../audio/chunking.js';
import { AudioError } from '../audio/errors.js';
import { SAMPLE_RATE } from '../audio/pcm.js';
import { SileroVad } from '../audio/silero-vad.js';
import { detectSpeech, planSegments } from '../audio/vad.js';
import type { AsrEngine, ChunkOptions, ChunkResult, ChunkTimings } from './engine.js';
import { mergeLanguages } from './postprocess.js';

export interface TranscribeOptions extends Omit<ChunkOptions, 'maxNewTokens'> {
  /** audio longer than this is split (default 30 s) */
  chunkSeconds: number;
  /**
   * Voice activity detection: only speech reaches the model, in segments of at most `maxSegmentSeconds` cut at
   * pauses. Absent: the reference pipeline exactly (the whole audio, split only past `chunkSeconds`).
   */
  vad?: { maxSegmentSeconds: number };
  /** per-chunk token budget = tokenBudgetBase + ceil(tokensPerSecond * chunk seconds) */
  tokensPerSecond: number;
  tokenBudgetBase: number;
  /**
   * One sequence for the whole audio: no VAD, no chunking (a live turn, already speech); audio longer than
   * `chunkSeconds` is refused (AudioError 'too_long'), never cut. Implied by `prefix`.
   */
  whole?: boolean;
}

export interface Segment {
  /** seconds in the original recording */
  start: number;
  end: number;
  text: string;
  language: string;
  /** token ids of the segment's text */
  tokens: number[];
  /** the token budget cut this segment short */
  truncated: boolean;
}

export interface TranscriptionResult {
  text: string;
  /** canonical names as the model writes them ('English'), in the order first heard, each once; [] when no speech */
  languages: string[];
  duration: number;
  segments: Segment[];
  truncated: boolean;
  cancelled: boolean;
  /** prompt tokens include the audio tokens */
  usage: { promptTokens: number; audioTokens: number; generatedTokens: number };
  /** summed over the chunks (stepsMs, steps, stepHostMs, stepRows: over the decode steps the chunks took part in) */
  timings: ChunkTimings;
}

/** Budget proportional to duration, so a noisy clip cannot decode forever. */
export function tokenBudget(seconds: number, o: Pick<TranscribeOptions, 'tokensPerSecond' | 'tokenBudgetBase'>): number {
  return o.tokenBudgetBase + Math.ceil(o.tokensPerSecond * seconds);
}

const CJK = /[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]/u;

/**
 * The reference concatenates chunk texts with "" (right for Chinese and Japanese); between two
 * chunks of a space-separated script that would glue words, so those get one space.
 */
export function joinSeparator(before: string, after: string): string {
  if (!before || !after || /\s$/.test(before) || /^\s/.test(after)) return '';
  return CJK.test(before.slice(-1)) || CJK.test(after.slice(0, 1)) ? '' : ' ';
}

/**
 * Where the model listens, in the recording's time line. The speech is found between the engine's model stages
 * (5 s of audio at a time), so an upload arriving while others decode joins their batch after a step or two.
 */
export async function planChunks(engine: AsrEngine, pcm: Float32Array, o: Pick<TranscribeOptions, 'chunkSeconds' | 'vad' | 'shouldStop'>): Promise<AudioChunk[]> {
  if (!o.vad) return splitAudioIntoChunks(pcm, o.chunkSeconds);
  const maxSeconds = Math.min(o.vad.maxSegmentSeconds, o.chunkSeconds);
  // Cancelled during detection (~0.3 s of CPU per minute of audio): the regions so far, which the caller skips.
  const regions = await detectSpeech(pcm, await SileroVad.forThread(), undefined, o.shouldStop, (score) => engine.betweenStages(score));
  // Short pieces are zero-padded to 0.5 s by the feature extractor, as the reference pads short chunks.
  return planSegments(pcm, regions, { maxSeconds }).map(({ start, end }) => ({
    pcm: pcm.subarray(Math.round(start * SAMPLE_RATE), Math.round(end * SAMPLE_RATE)),
    start,
    end,
  }));
}

/** The audio as one chunk, refused past the chunk limit rather than cut. */
function wholeChunk(pcm: Float32Array, chunkSeconds: number): AudioChunk {
  const seconds = pcm.length / SAMPLE_RATE;
  if (seconds > chunkSeconds) {
    throw new AudioError('too_long', `audio transcribed whole may last at most ${chunkSeconds} s; this lasts ${seconds.toFixed(2)} s`);
  }
  return { pcm, start: 0, end: seconds };
}

/** Each chunk is transcribed on its own (fresh prompt and cache); no speech, no model run. */
export async function transcribe(engine: AsrEngine, pcm: Float32Array, o: TranscribeOptions): Promise<TranscriptionResult> {
  // A prefix continues one sequence's text: it cannot be split among chunks.
  const chunks = o.whole || o.prefix ? [wholeChunk(pcm, o.chunkSeconds)] : await planChunks(engine, pcm, o);
  const segments: Segment[] = [];
  const results: ChunkResult[] = [];
  let text = '';
  const { chunkSeconds: _c, tokensPerSecond: _t, tokenBudgetBase: _b, vad: _v, whole: _w, onDelta, ...shared } = o;
  let stoppedBetweenChunks = false;
  for (const chunk of chunks) {
    // Cancelled while queued or after a chunk: no further encoder or prefill runs.
    if (o.shouldStop?.()) {
      stoppedBetweenChunks = true;
      break;
    }
    let firstDelta = true;
    const chunkOptions: ChunkOptions = {
      ...shared,
      maxNewTokens: tokenBudget(chunk.end - chunk.start, o),
      ...(onDelta
        ? {
            onDelta: (delta: string) => {
              // The separator is only known once this chunk's first text arrives.
              onDelta((firstDelta ? joinSeparator(text, delta) : '') + delta);
              firstDelta = false;
            },
          }
        : {}),
    };
    const r = await engine.transcribeChunk(chunk.pcm, chunkOptions);
    results.push(r);
    if (r.text) text += joinSeparator(text, r.text) + r.text;
    segments.push({ start: chunk.start, end: chunk.end, text: r.text, language: r.language, tokens: r.textTokens, truncated: r.truncated });
    if (r.cancelled) break;
  }
  const sum = (f: (r: ChunkResult) => number) => results.reduce((a, r) => a + f(r), 0);
  return {
    text,
    languages: mergeLanguages(segments.map((s) => s.language)),
    duration: pcm.length / SAMPLE_RATE,
    segments,
    truncated: results.some((r) => r.truncated),
    // no chunks: nothing to run, but a stop during voice activity detection is still a cancellation
    cancelled: stoppedBetweenChunks || results.some((r) => r.cancelled) || (chunks.length === 0 && o.shouldStop?.() === true),
    usage: {
      promptTokens: sum((r) => r.promptTokens),
      audioTokens: sum((r) => r.audioTokens),
      generatedTokens: sum((r) => r.tokens.length),
    },
    timings: {
      featuresMs: sum((r) => r.timings.featuresMs),
      encoderMs: sum((r) => r.timings.encoderMs),
      prefillMs: sum((r) => r.timings.prefillMs),
      stepsMs: sum((r) => r.timings.stepsMs),
      steps: sum((r) => r.timings.steps),
      stepHostMs: sum((r) => r.timings.stepHostMs),
      stepRows: sum((r) => r.timings.stepRows),
    },
  };
}
