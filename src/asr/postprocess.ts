import { normalizeLanguageName } from './languages.js';

/*
 * Ports of qwen_asr/inference/utils.py (Apache-2.0): repetition repair and output parsing. Python
 * indexes strings by code point, so both work on code-point arrays to match it on emoji and CJK.
 */

const REPEAT_THRESHOLD = 20;
const MAX_PATTERN_LENGTH = 20;

/** Runs of one code point longer than `threshold` kept once; `from[i]` is where out[i] was in `s`. */
function fixCharRepeats(s: readonly string[], threshold: number): { out: string[]; from: number[]; lastRun: number } {
  const out: string[] = [];
  const from: number[] = [];
  let lastRun = 0;
  for (let i = 0; i < s.length; ) {
    let count = 1;
    while (i + count < s.length && s[i + count] === s[i]) count++;
    lastRun = out.length;
    for (let k = 0; k < (count > threshold ? 1 : count); k++) {
      out.push(s[i + k]!);
      from.push(i + k);
    }
    i += count;
  }
  return { out, from, lastRun };
}

function sameRun(s: readonly string[], a: number, b: number, length: number): boolean {
  if (b + length > s.length) return false;
  for (let k = 0; k < length; k++) if (s[a + k] !== s[b + k]) return false;
  return true;
}

/**
 * The shortest pattern of 1..20 code points repeated >= threshold times in a row from `i` (0 if none), and how far
 * the answer read: Infinity when more text could still change it (a window not yet whole that repeats so far).
 */
function patternAt(s: readonly string[], i: number, threshold: number): { k: number; reach: number } {
  let reach = i + 1;
  for (let k = 1; k <= MAX_PATTERN_LENGTH; k++) {
    // s[i, i + k * threshold) repeats with period k when each code point equals the one k before it.
    const need = i + k * threshold;
    const limit = Math.min(need, s.length);
    let j = i + k;
    while (j < limit && s[j] === s[j - k]) j++;
    if (j < limit) reach = Math.max(reach, j + 1);
    else if (need <= s.length) return { k, reach: need };
    else return { k: 0, reach: Infinity };
  }
  return { k: 0, reach };
}

interface Repair {
  /** the repaired code points */
  out: string[];
  /** code points of the input whose repair no continuation can change, ending where repair can restart */
  settledInput: number;
  /** out's code points that come from them */
  settledOutput: number;
  /** out's leading code points that no continuation of the input changes (at least settledOutput) */
  finalOutput: number;
}

/**
 * The Python scan, left to right: a pattern repeated >= threshold times is kept once and the scan goes on after
 * its last repeat (its recursion), else the code point is kept. The decision at a position is final once what it
 * read is settled (everything before the last run of one code point, which may still grow); the scan notes the
 * last such position that is also a boundary between runs of different, non-blank code points: the repair of the
 * input before it is final and the rest repairs on its own (TranscriptDeltas).
 */
function repair(input: readonly string[], threshold: number): Repair {
  const { out: s, from, lastRun } = fixCharRepeats(input, threshold);
  const n = s.length;
  const out: string[] = [];
  let settled = { settledInput: 0, settledOutput: 0 };
  let final = true;
  let finalOutput = 0;
  let i = 0;
  while (i <= n - threshold * 2) {
    if (final && i > 0 && s[i - 1] !== s[i] && !/\s/u.test(s[i - 1]!)) settled = { settledInput: from[i]!, settledOutput: out.length };
    const { k, reach } = patternAt(s, i, threshold);
    final &&= reach <= lastRun;
    if (!k) {
      out.push(s[i]!);
      i++;
      if (final) finalOutput = out.length;
      continue;
    }
    let end = i + threshold * k;
    while (end + k <= n && sameRun(s, i, end, k)) end += k;
    final &&= end + k <= lastRun;
    out.push(...s.slice(i, i + k));
    i = end;
    if (final) finalOutput = out.length;
  }
  // The scan has not reached the last 2 x threshold code points yet: kept as they are, each final only once no
  // continuation can make a pattern start there.
  for (; i < n; i++) {
    out.push(s[i]!);
    if (!final) continue;
    const { k, reach } = patternAt(s, i, threshold);
    final = !k && reach <= lastRun;
    if (final) finalOutput = out.length;
  }
  return { out, ...settled, finalOutput };
}

export function detectAndFixRepetitions(text: string, threshold = REPEAT_THRESHOLD): string {
  return repair(Array.from(text), threshold).out.join('');
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
 * Whether output that continues a forced `text` keeps its leading white space: after a word it separates that
 * word from the next one; after no text, or text that ends in white space, it would be stray or doubled.
 */
export function keepsLeadingSpace(text: string): boolean {
  return text !== '' && !/\s$/u.test(text);
}

/**
 * `language English<asr_text>text` (auto) or plain text (forced language) -> language and text;
 * `language None<asr_text>` means no speech. `keepLeadingSpace`: the output continues forced text
 * (keepsLeadingSpace), so only its end is trimmed.
 */
export function parseAsrOutput(raw: string, forcedLanguage?: string, keepLeadingSpace = false): ParsedOutput {
  let s = keepLeadingSpace ? raw.trimEnd() : raw.trim();
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
 * Turns decoded pieces into transcript deltas for streaming that add up to exactly the final text
 * (parseAsrOutput of the whole output): the "language X<asr_text>" header is dropped, and text that the
 * repetition repair or the final trim could still change is held back until it cannot, or until end().
 * The repair is decided left to right (repair()): what it has decided for good is streamed, and each piece
 * repairs only the tail after the last settled point, so the cost of a piece does not grow with the transcript.
 */
export class TranscriptDeltas {
  private raw = '';
  private tagSeen = false;
  /** raw's unsettled part (after leading white space, unless kept), once raw has more than white space */
  private tail?: string;
  /** the repair of raw's settled part: what the final repaired output starts with */
  private settled = '';
  /** where the transcript starts in the repaired output (after the header's tag), once the tag is settled */
  private textStart = -1;
  private sent = '';

  constructor(
    private readonly forcedLanguage?: string,
    /** as parseAsrOutput's */
    private readonly keepLeadingSpace = false,
  ) {}

  /** The model's output so far. */
  get rawText(): string {
    return this.raw;
  }

  push(piece: string): string {
    if (!piece) return '';
    const before = this.raw.length;
    this.raw += piece;
    // Before the header's end the text is unknown (a missing tag makes the whole output the text).
    this.tagSeen ||= !!this.forcedLanguage || this.raw.includes(ASR_TEXT_TAG, Math.max(0, before - ASR_TEXT_TAG.length));
    if (!this.tagSeen) return '';
    if (this.tail === undefined) {
      if (!this.raw.trim()) return '';
      this.tail = this.keepLeadingSpace ? this.raw : this.raw.trimStart();
    } else this.tail += piece;
    const tail = Array.from(this.tail.trimEnd());
    const r = repair(tail, REPEAT_THRESHOLD);
    if (r.settledInput > 0) {
      this.tail = this.tail.slice(tail.slice(0, r.settledInput).join('').length);
      this.settled += r.out.slice(0, r.settledOutput).join('');
    }
    // The final repaired output starts with this; its trailing white space may yet be trimmed.
    const decided = this.settled + r.out.slice(r.settledOutput, r.finalOutput).join('');
    const text = this.forcedLanguage ? decided.trimEnd() : this.transcriptOf(decided);
    return text === undefined ? '' : this.advance(text);
  }

  /** The rest of the final text. */
  end(): string {
    return this.advance(parseAsrOutput(this.raw, this.forcedLanguage, this.keepLeadingSpace).text);
  }

  /** parseAsrOutput's text of the start of a repaired output, once it holds the tag. */
  private transcriptOf(repaired: string): string | undefined {
    if (this.textStart >= 0) return repaired.slice(this.textStart).trim();
    const tag = repaired.indexOf(ASR_TEXT_TAG);
    if (tag < 0) return undefined;
    if (tag + ASR_TEXT_TAG.length <= this.settled.length) this.textStart = tag + ASR_TEXT_TAG.length;
    return repaired.slice(tag + ASR_TEXT_TAG.length).trim();
  }

  private advance(text: string): string {
    // What was sent stays sent: only an extension of it is streamed.
    if (text.length <= this.sent.length || !text.startsWith(this.sent)) return '';
    const delta = text.slice(this.sent.length);
    this.sent = text;
    return delta;
  }
}
