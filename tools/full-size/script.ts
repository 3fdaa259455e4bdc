import { buildPrompt } from '../../src/asr/prompt.js';
import type { Tokenizer } from '../../src/asr/tokenizer.js';

/*
 * The scripted stand-in (--scripted-text) says, for every transcription, `language English<asr_text>` and then the
 * first words of one fixed script, as many as the audio allows, then <|im_end|>. A longer turn says more of the
 * same words, so consecutive partials of a growing turn agree the way a real model's do, and a forced prefix of
 * the script is continued where it stops.
 */

/** Distinct common English words, each one Qwen3 token (the first without its leading space, as the model writes
 *  the first word after <asr_text>; the others with it). */
const WORDS = `The of and to in is that for it with as was on be by at this had not are but from or have an they which one
you were her all she there would their we him been has when who will more no if out so said what up its about into
than them can only other new some could time these two may then do first any my now such like our over man me even
most made after also did many before must through back years where much your way well down should because each just
those people how too little state good very make world still own see men work long get here between both life being
under never day same another know while last might us great old year off come since against go came right used take
three`.split(/\s+/);

/** Encoder rows per word: 13 rows a second of audio, so 3.25 words a second, about the pace of speech. */
export const ROWS_PER_WORD = 4;
/** Enough words for a 30 s turn (97); fewer when the hidden width is smaller (one lm_head channel per token). */
export const MAX_SCRIPT_WORDS = 120;
/** The embedding table's last channel holds this exactly on script tokens (random values lie in 0.5..2 in size). */
export const SCRIPT_MARKER = 4;

export interface TextScript {
  /** what the model says, in order: the header's tokens (`language`, ` English`, `<asr_text>`), then the words */
  tokens: number[];
  headerTokens: number;
  words: string[];
  /** the prompt's tokens besides audio pads and script tokens: buildPrompt with no audio, context or language */
  templateTokens: number;
  rowsPerWord: number;
}

/** The number of words the script allows for a prompt with `audioRows` encoder rows. */
export function scriptWords(script: Pick<TextScript, 'rowsPerWord' | 'words'>, audioRows: number): number {
  return Math.min(Math.floor(audioRows / script.rowsPerWord), script.words.length);
}

/** The script for a decoder `hidden` wide: every token needs its own channel of the final hidden state. */
export function textScript(tokenizer: Tokenizer, hidden: number): TextScript {
  const header = [...tokenizer.encodeOrdinary('language English'), tokenizer.tokenId('<asr_text>')];
  const words = WORDS.slice(0, Math.min(MAX_SCRIPT_WORDS, hidden - header.length)).map((w, i) => (i === 0 ? w : ` ${w}`));
  const tokens = [...header];
  for (const word of words) {
    const ids = tokenizer.encodeOrdinary(word);
    if (ids.length !== 1) throw new Error(`script word ${JSON.stringify(word)} is ${ids.length} tokens, not one`);
    tokens.push(ids[0]!);
  }
  const template = buildPrompt(tokenizer, { nAudioTokens: 0 }).ids;
  if (template.some((id) => tokens.includes(id))) throw new Error('a script token is part of the prompt template');
  return { tokens, headerTokens: header.length, words, templateTokens: template.length, rowsPerWord: ROWS_PER_WORD };
}
