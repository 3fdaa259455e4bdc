import type { Language } from './languages.js';
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
}

export interface AsrPrompt {
  ids: number[];
  /** index of the first <|audio_pad|>; encoder rows replace positions audioOffset..audioOffset+nAudioTokens */
  audioOffset: number;
  nAudioTokens: number;
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
  let after = `${SPECIAL.audioEnd}${SPECIAL.imEnd}\n${SPECIAL.imStart}assistant\n`;
  if (options.language) after += `language ${options.language}${SPECIAL.asrText}`;
  const prefix = [...before, ...context, ...userTurn];
  const pads = new Array<number>(options.nAudioTokens).fill(tokenizer.tokenId(SPECIAL.audioPad));
  return { ids: [...prefix, ...pads, ...tokenizer.encode(after)], audioOffset: prefix.length, nAudioTokens: options.nAudioTokens };
}
