import { normalizeLanguageName } from './languages.js';

/*
 * Ports of qwen_asr/inference/utils.py (Apache-2.0): repetition repair and output parsing. Python
 * indexes strings by code point, so both work on code-point arrays to match it on emoji and CJK.
 */

const REPEAT_THRESHOLD = 20;
const MAX_PATTERN_LENGTH = 20;

function fixCharRepeats(s: string[], threshold: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.length; ) {
    let count = 1;
    while (i + count < s.length && s[i + count] === s[i]) count++;
    if (count > threshold) out.push(s[i]!);
    else for (let k = 0; k < count; k++) out.push(s[i + k]!);
    i += count;
  }
  return out;
}

function sameRun(s: string[], a: number, b: number, length: number): boolean {
  if (b + length > s.length) return false;
  for (let k = 0; k < length; k++) if (s[a + k] !== s[b + k]) return false;
  return true;
}

/** The first pattern of 1..20 code points repeated >= threshold times in a row is kept once; then recurse. */
function fixPatternRepeats(s: string[], threshold: number): string[] {
  const n = s.length;
  const minRepeatChars = threshold * 2;
  if (n < minRepeatChars) return s;
  const out: string[] = [];
  let i = 0;
  let found = false;
  while (i <= n - minRepeatChars) {
    for (let k = 1; k <= MAX_PATTERN_LENGTH; k++) {
      if (i + k * threshold > n) break;
      let valid = true;
      for (let rep = 1; rep < threshold && valid; rep++) valid = sameRun(s, i, i + rep * k, k);
      if (!valid) continue;
      let end = i + threshold * k;
      while (end + k <= n && sameRun(s, i, end, k)) end += k;
      out.push(...s.slice(i, i + k), ...fixPatternRepeats(s.slice(end), threshold));
      found = true;
      break;
    }
    if (found) break;
    out.push(s[i]!);
    i++;
  }
  if (!found) out.push(...s.slice(i));
  return out;
}

export function detectAndFixRepetitions(text: string, threshold = REPEAT_THRESHOLD): string {
  return fixPatternRepeats(fixCharRepeats(Array.from(text), threshold), threshold).join('');
}

export interface ParsedOutput {
  /** canonical language name, '' when unknown or no speech */
  language: string;
  text: string;
}

const ASR_TEXT_TAG = '<asr_text>';
const LANGUAGE_PREFIX = 'language ';
/** What Python's str.splitlines() splits on (file/group/record separators included). */
// eslint-disable-next-line no-control-regex
const PYTHON_LINE_BREAKS = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

/**
 * `language English<asr_text>text` (auto) or plain text (forced language) -> language and text;
 * `language None<asr_text>` means no speech.
 */
export function parseAsrOutput(raw: string, forcedLanguage?: string): ParsedOutput {
  let s = raw.trim();
  if (!s) return { language: '', text: '' };
  s = detectAndFixRepetitions(s);
  if (forcedLanguage) return { language: forcedLanguage, text: s };
  const tag = s.indexOf(ASR_TEXT_TAG);
  if (tag < 0) return { language: '', text: s.trim() };
  const meta = s.slice(0, tag);
  const text = s.slice(tag + ASR_TEXT_TAG.length).trim();
  if (meta.toLowerCase().includes('language none')) return { language: '', text };
  let language = '';
  for (const rawLine of meta.split(PYTHON_LINE_BREAKS)) {
    const line = rawLine.trim();
    if (!line.toLowerCase().startsWith(LANGUAGE_PREFIX)) continue;
    const value = line.slice(LANGUAGE_PREFIX.length).trim();
    if (value) language = normalizeLanguageName(value);
    break;
  }
  return { language, text };
}

/** Languages in the order first heard, each once; blanks (no speech) dropped. */
export function mergeLanguages(languages: readonly string[]): string[] {
  const out: string[] = [];
  for (const l of languages.map((x) => x.trim())) if (l && !out.includes(l)) out.push(l);
  return out;
}

/**
 * How many leading code points of a transcript no continuation can change: the tail that could still
 * grow into a repeated pattern (a suffix that repeats with some period up to MAX_PATTERN_LENGTH, which
 * includes the last MAX_PATTERN_LENGTH code points) or be trimmed (trailing white space) is held back.
 */
function stableLength(cps: readonly string[]): number {
  const n = cps.length;
  let stable = n;
  while (stable > 0 && /\s/u.test(cps[stable - 1]!)) stable--;
  for (let k = 1; k <= MAX_PATTERN_LENGTH; k++) {
    let p = n - k;
    while (p > 0 && cps[p - 1] === cps[p - 1 + k]) p--;
    stable = Math.min(stable, Math.max(0, p));
  }
  return stable;
}

/**
 * Turns decoded pieces into transcript deltas for streaming that add up to exactly the final text
 * (parseAsrOutput of the whole output): the "language X<asr_text>" header is dropped, and text that the
 * repetition repair or the final trim could still change is held back until it cannot, or until end().
 */
export class TranscriptDeltas {
  private raw = '';
  private sent = '';

  constructor(private readonly forcedLanguage?: string) {}

  /** The model's output so far. */
  get rawText(): string {
    return this.raw;
  }

  push(piece: string): string {
    if (!piece) return '';
    this.raw += piece;
    // Before the header's end the text is unknown (a missing tag makes the whole output the text).
    if (!this.forcedLanguage && !this.raw.includes(ASR_TEXT_TAG)) return '';
    const cps = Array.from(parseAsrOutput(this.raw, this.forcedLanguage).text);
    return this.advance(cps.slice(0, stableLength(cps)).join(''));
  }

  /** The rest of the final text. */
  end(): string {
    return this.advance(parseAsrOutput(this.raw, this.forcedLanguage).text);
  }

  private advance(text: string): string {
    // What was sent stays sent: only an extension of it is streamed.
    if (text.length <= this.sent.length || !text.startsWith(this.sent)) return '';
    const delta = text.slice(this.sent.length);
    this.sent = text;
    return delta;
  }
}
