import { normalizeLanguageName, type Language } from './languages.js';
import type { Tokenizer } from './tokenizer.js';

export const SPECIAL = {
  endOfText: '<|endoftext|>',
  imStart: '<|im_start|>',
  imEnd: '<|im_end|>',
  audioStart: '<|audio_start|>',
  audioEnd: '<|audio_end|>',
  audioPad: '<|audio_pad|>',
  asrText: '<asr_text>',
} as const;

/** Encoder rows for T mel frames: per 100-frame chunk 13 rows, the tail through three stride-2 convs. */
export function nAudioTokens(nFrames: number): number {
  const conv = (x: number) => (x <= 0 ? 0 : Math.floor((x - 1) / 2) + 1);
  return 13 * Math.floor(nFrames / 100) + conv(conv(conv(nFrames % 100)));
}

export interface PromptOptions {
  nAudioTokens: number;
  /** Free text for the system turn (hot words, background); the model reads it, it does not obey it. */
  context?: string;
  /** Forced language: the prompt ends with "language X<asr_text>" and the model writes only text. */
  language?: Language;
  /** Forced start of the answer (its header names the language, as `language` does): the model continues after it. */
  prefix?: TranscriptPrefix;
}

/**
 * The start of an answer the model is made to continue: `language {language}<asr_text>{text}`, tokenised as the
 * model writes it (the header's words, the <asr_text> token, then the text's own BPE tokens: <asr_text> is an added
 * token, so nothing merges across it).
 */
export interface TranscriptPrefix {
  /** the language name as the model wrote it in its header ('English') */
  language: string;
  /** transcript so far; may be empty (then only the header is forced) */
  text: string;
}

/** A language name the model could have written: letters and spaces, nothing that could open a token. */
const LANGUAGE_NAME = /^\p{L}[\p{L}\p{M} ]{0,39}$/u;

/**
 * The language the answer's header names when the prompt forces one (a prefix's, canonical, or the forced
 * language). A prefix with a name the model could not have written, or one that contradicts the forced language,
 * is the caller's mistake: refused with a clear message.
 */
export function headerLanguage(o: Pick<PromptOptions, 'language' | 'prefix'>): string | undefined {
  if (!o.prefix) return o.language;
  if (!LANGUAGE_NAME.test(o.prefix.language)) {
    throw new RangeError(`prefix language must be a language name as the model writes it (e.g. 'English'); got ${JSON.stringify(o.prefix.language)}`);
  }
  const named = normalizeLanguageName(o.prefix.language);
  if (o.language && named !== o.language) {
    throw new RangeError(`prefix language ${JSON.stringify(o.prefix.language)} contradicts the forced language ${o.language}`);
  }
  return named;
}

export interface AsrPrompt {
  ids: number[];
  /** index of the first <|audio_pad|>; encoder rows replace positions audioOffset..audioOffset+nAudioTokens */
  audioOffset: number;
  nAudioTokens: number;
  /** the prompt's last ids that are transcript text (the forced prefix's text) */
  prefixTextTokens: number;
}

/**
 * The qwen-asr chat prompt: system turn (context, possibly empty), a user turn holding only the audio,
 * the assistant turn opened; one <|audio_pad|> per encoder row.
 */
export function buildPrompt(tokenizer: Tokenizer, options: PromptOptions): AsrPrompt {
  const before = tokenizer.encode(`${SPECIAL.imStart}system\n`);
  // Context is caller text: encoded as plain text so it cannot smuggle in control tokens.
  const context = options.context ? tokenizer.encodeOrdinary(options.context) : [];
  const userTurn = tokenizer.encode(`${SPECIAL.imEnd}\n${SPECIAL.imStart}user\n${SPECIAL.audioStart}`);
  const after = `${SPECIAL.audioEnd}${SPECIAL.imEnd}\n${SPECIAL.imStart}assistant\n`;
  const beforeAudio = [...before, ...context, ...userTurn];
  const pads = new Array<number>(options.nAudioTokens).fill(tokenizer.tokenId(SPECIAL.audioPad));
  // A forced answer start is prefilled with the prompt. Its words are plain text, like the context, and tokenise
  // as in one string: "\n" before "language" and the added <asr_text> both end a pre-tokenizer piece.
  const language = headerLanguage(options);
  const forcedText = options.prefix ? tokenizer.encodeOrdinary(options.prefix.text) : [];
  const answer = language ? [...tokenizer.encodeOrdinary(`language ${language}`), tokenizer.tokenId(SPECIAL.asrText), ...forcedText] : [];
  return {
    ids: [...beforeAudio, ...pads, ...tokenizer.encode(after), ...answer],
    audioOffset: beforeAudio.length,
    nAudioTokens: options.nAudioTokens,
    prefixTextTokens: forcedText.length,
  };
}
