/**
 * Word error rate and the model card's "agreement" (1 - WER), for `npm run eval`. It lives in bench/ because
 * only the evaluation scores transcripts: the service never compares its text with a reference.
 */

/** One step of a word alignment: a kept word, a substitution, a reference word missing (deletion) or an extra one. */
export type AlignmentStep =
  | { op: 'match'; ref: string; hyp: string }
  | { op: 'sub'; ref: string; hyp: string }
  | { op: 'del'; ref: string }
  | { op: 'ins'; hyp: string };

export interface ClipScore {
  refWords: number;
  substitutions: number;
  deletions: number;
  insertions: number;
  /** substitutions + deletions + insertions */
  edits: number;
  /** edits / reference words; 0 for an empty reference with an empty hypothesis, Infinity for one with words */
  wer: number;
  /** 1 - WER: can go below 0 when the hypothesis adds many words */
  agreement: number;
  alignment: AlignmentStep[];
}

const APOSTROPHES = /[\u2019\u2018\u02bc\uff07]/gu;
// letters, marks (combining accents, Indic vowel signs), digits, and apostrophes; the rest separates words
const NOT_WORD = /[^\p{L}\p{M}\p{N}']+/gu;

/**
 * The card's normalisation: lowercase, punctuation stripped, whitespace collapsed. Rule: typographic apostrophes
 * become ', hyphens and dashes separate words ("well-known" -> well known), every character that is not a letter,
 * mark, digit or apostrophe separates words, and an apostrophe survives only inside a word ("don't", not 'quoted'
 * or dogs'). Words are split on whitespace, so scripts written without spaces (Chinese, Japanese) count a whole
 * run as one word.
 */
export function normalizeWords(text: string): string[] {
  return text
    .normalize('NFKC')
    .toLowerCase()
    .replace(APOSTROPHES, "'")
    .replace(NOT_WORD, ' ')
    .split(' ')
    .map((w) => w.replace(/^'+|'+$/g, ''))
    .filter((w) => w.length > 0);
}

/**
 * Word-level Levenshtein alignment (unit costs). Ties prefer a match or substitution, then a deletion, then an
 * insertion, so the same pair of texts always aligns the same way.
 */
export function alignWords(ref: readonly string[], hyp: readonly string[]): AlignmentStep[] {
  const cols = hyp.length + 1;
  const cost = new Uint32Array((ref.length + 1) * cols);
  for (let j = 0; j <= hyp.length; j++) cost[j] = j;
  for (let i = 1; i <= ref.length; i++) {
    cost[i * cols] = i;
    for (let j = 1; j <= hyp.length; j++) {
      const diagonal = cost[(i - 1) * cols + j - 1]! + (ref[i - 1] === hyp[j - 1] ? 0 : 1);
      cost[i * cols + j] = Math.min(diagonal, cost[(i - 1) * cols + j]! + 1, cost[i * cols + j - 1]! + 1);
    }
  }
  const steps: AlignmentStep[] = [];
  let i = ref.length;
  let j = hyp.length;
  while (i > 0 || j > 0) {
    const here = cost[i * cols + j]!;
    if (i > 0 && j > 0 && here === cost[(i - 1) * cols + j - 1]! + (ref[i - 1] === hyp[j - 1] ? 0 : 1)) {
      steps.push({ op: ref[i - 1] === hyp[j - 1] ? 'match' : 'sub', ref: ref[i - 1]!, hyp: hyp[j - 1]! });
      i--;
      j--;
    } else if (i > 0 && here === cost[(i - 1) * cols + j]! + 1) {
      steps.push({ op: 'del', ref: ref[--i]! });
    } else {
      steps.push({ op: 'ins', hyp: hyp[--j]! });
    }
  }
  return steps.reverse();
}

/** Scores one hypothesis against its reference, both normalised with `normalizeWords`. */
export function scoreClip(reference: string, hypothesis: string): ClipScore {
  const ref = normalizeWords(reference);
  const hyp = normalizeWords(hypothesis);
  const alignment = alignWords(ref, hyp);
  const count = (op: AlignmentStep['op']) => alignment.filter((s) => s.op === op).length;
  const substitutions = count('sub');
  const deletions = count('del');
  const insertions = count('ins');
  const edits = substitutions + deletions + insertions;
  const wer = ref.length > 0 ? edits / ref.length : edits === 0 ? 0 : Infinity;
  return { refWords: ref.length, substitutions, deletions, insertions, edits, wer, agreement: 1 - wer, alignment };
}

/** The differing words only: `ref→hyp` for a substitution, `-ref` for a deletion, `+hyp` for an insertion. */
export function describeDifferences(alignment: readonly AlignmentStep[]): string[] {
  return alignment.flatMap((s) => {
    switch (s.op) {
      case 'match':
        return [];
      case 'sub':
        return [`${s.ref}→${s.hyp}`];
      case 'del':
        return [`-${s.ref}`];
      case 'ins':
        return [`+${s.hyp}`];
    }
  });
}

export interface CorpusScore {
  clips: number;
  refWords: number;
  edits: number;
  /** total edits / total reference words (what jiwer gives for a list of pairs) */
  wer: number;
  agreement: number;
  /** the mean of the per-clip agreements (each clip weighs the same, whatever its length) */
  meanAgreement: number;
}

/** Aggregates clip scores two ways: pooled over all words, and averaged over clips. */
export function scoreCorpus(clips: readonly Pick<ClipScore, 'refWords' | 'edits' | 'agreement'>[]): CorpusScore {
  const refWords = clips.reduce((n, c) => n + c.refWords, 0);
  const edits = clips.reduce((n, c) => n + c.edits, 0);
  const wer = refWords > 0 ? edits / refWords : edits === 0 ? 0 : Infinity;
  const meanAgreement = clips.length ? clips.reduce((n, c) => n + c.agreement, 0) / clips.length : NaN;
  return { clips: clips.length, refWords, edits, wer, agreement: 1 - wer, meanAgreement };
}
