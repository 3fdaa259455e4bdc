/**
 * The speech rate of a folder of transcribed clips in the model's own tokens, so that a decode rate (tokens per
 * second) can be read as audio seconds per second: the clips' mean length, the mean prompt the engine builds for
 * one (the chat template around one audio pad per encoder row), and the mean answer the model writes for it
 * (`language English<asr_text>{text}` and <|im_end|>, its reference transcript). Each clip is taken whole, as one
 * prompt: the service splits only audio longer than its chunk limit (30 s by default).
 *
 * The folder holds transcripts.jsonl, lines of {"file": "noise.wav", "text": "..."}, and the WAV files it names.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { melFrameCount, SAMPLE_RATE } from '../src/audio/logMel.js';
import { readWavHeader } from '../src/audio/wav.js';
import { buildPrompt, nAudioTokens } from '../src/asr/prompt.js';
import type { Tokenizer } from '../src/asr/tokenizer.js';

export interface SpeechRate {
  clips: number;
  /** mean audio seconds per clip, from the WAV headers */
  audioSeconds: number;
  /** mean prompt tokens per clip */
  promptTokens: number;
  /** mean answer tokens per clip, <|im_end|> included */
  answerTokens: number;
  answerTokensPerAudioSecond: number;
  /** the clips folder */
  source: string;
}

/** A clips folder that cannot be read, said in one line. */
export class SpeechRateError extends Error {}

/** The answer's header names this language: the clips are English speech. */
const ANSWER_LANGUAGE = 'English';

/** As the service benches default their clips: SHARED_DIR, else the shared folder beside the repository. */
export function defaultClipsDir(): string {
  return resolve(process.env.SHARED_DIR ?? join(import.meta.dirname, '..', '..', 'shared'), 'fixtures', 'voices-in-the-wild');
}

/** The mel frames the engine computes for a clip: resampled to 16 kHz (round(n * 16000 / rate) samples, as src/audio/resample.ts). */
function melFrames(frames: number, sampleRate: number): number {
  return melFrameCount(Math.round((frames * SAMPLE_RATE) / sampleRate));
}

/** A clip's length in seconds and its mel frames, from its WAV header. */
function clipLength(path: string): { seconds: number; melFrames: number } {
  let header;
  try {
    header = readWavHeader(readFileSync(path));
  } catch {
    header = undefined;
  }
  if (!header?.frames || header.sampleRate <= 0) throw new SpeechRateError(`${path}: not a readable WAV file`);
  return { seconds: header.frames / header.sampleRate, melFrames: melFrames(header.frames, header.sampleRate) };
}

/** The clips transcripts.jsonl lists: their files and reference texts. */
function listedClips(dir: string): { file: string; text: string }[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new SpeechRateError(`no clips folder ${dir}`);
  const list = join(dir, 'transcripts.jsonl');
  if (!existsSync(list)) throw new SpeechRateError(`${list} is missing: the clips folder lists its clips there, one {"file", "text"} a line`);
  const clips = readFileSync(list, 'utf8')
    .split('\n')
    .map((line, i) => ({ line: line.trim(), n: i + 1 }))
    .filter(({ line }) => line !== '')
    .map(({ line, n }) => {
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = undefined;
      }
      const { file, text } = (entry ?? {}) as { file?: unknown; text?: unknown };
      if (typeof file !== 'string' || typeof text !== 'string') throw new SpeechRateError(`${list}:${n}: expected {"file": "NAME.wav", "text": "..."}`);
      return { file, text };
    });
  if (clips.length === 0) throw new SpeechRateError(`${list} lists no clips`);
  return clips;
}

/** The clips' mean length, prompt and answer, and answer tokens per audio second; SpeechRateError when unreadable. */
export function speechRate(dir: string, tokenizer: Tokenizer): SpeechRate {
  const source = resolve(dir);
  const clips = listedClips(source).map(({ file, text }) => ({ ...clipLength(join(source, file)), text }));
  // The answer's tokens as the engine tokenises a forced answer start: the prompt with the answer as its prefix,
  // less the prompt without it; then the <|im_end|> the model closes its turn with.
  const bare = buildPrompt(tokenizer, { nAudioTokens: 0 }).ids.length;
  const answer = (text: string) => buildPrompt(tokenizer, { nAudioTokens: 0, prefix: { language: ANSWER_LANGUAGE, text } }).ids.length - bare + 1;
  const mean = (f: (c: (typeof clips)[number]) => number) => clips.reduce((sum, c) => sum + f(c), 0) / clips.length;
  const audioSeconds = mean((c) => c.seconds);
  const answerTokens = mean((c) => answer(c.text));
  return {
    clips: clips.length,
    audioSeconds: round(audioSeconds),
    promptTokens: round(mean((c) => buildPrompt(tokenizer, { nAudioTokens: nAudioTokens(c.melFrames) }).ids.length)),
    answerTokens: round(answerTokens),
    answerTokensPerAudioSecond: round(answerTokens / audioSeconds),
    source,
  };
}

const round = (x: number) => Number(x.toFixed(3));
