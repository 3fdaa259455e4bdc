/**
 * Which text of a growing turn is stable enough to show: word-level agreement of consecutive hypotheses
 * (LocalAgreement-2, as whisper_streaming: Macháček et al. 2023) and a guard against repetition loops.
 */

/** Scripts written without spaces between words: each character (with its combining marks) is a unit. */
const UNSPACED = String.raw`[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Thai}\p{Script=Lao}\p{Script=Khmer}\p{Script=Myanmar}\u3000-\u303f\uff00-\uffef]\p{M}*`;
const UNIT = new RegExp(String.raw`\s*(?:${UNSPACED}|(?:(?!${UNSPACED})\S)+)`, 'gu');

/**
 * Text as units that keep their leading whitespace: words where words are spaced, characters where they are not.
 * Joined they give the text back without its trailing whitespace.
 */
export function textUnits(text: string): string[] {
  return text.match(UNIT) ?? [];
}

/**
 * LocalAgreement-2 on the units after the emitted text: a unit is stable once two consecutive hypotheses
 * (each transcribing the turn so far with the emitted text forced as its prefix) both say it, in the same place.
 */
export class LocalAgreement<Mark> {
  /** the previous hypothesis's units after the emitted text, and what its caller marked it with */
  private pending: string[] = [];
  private pendingMark: Mark | undefined;

  /**
   * A new hypothesis after the emitted text; returns the units it agrees on with the previous one and that
   * hypothesis's mark (stable: the caller emits them, then calls `emitted`).
   */
  accept(units: string[], mark: Mark): { stable: string[]; mark: Mark | undefined } {
    let n = 0;
    while (n < units.length && n < this.pending.length && units[n] === this.pending[n]) n++;
    const proposedBy = this.pendingMark;
    this.pending = units;
    this.pendingMark = mark;
    return { stable: units.slice(0, n), mark: proposedBy };
  }

  /** The first `count` pending units were emitted: the next hypothesis starts after them. */
  emitted(count: number): void {
    this.pending = this.pending.slice(count);
  }
}

/** A pattern of up to this many units (a short sentence)... */
const MAX_PATTERN_UNITS = 16;
/** ...repeated back to back more than this many times is a loop, not speech. */
export const MAX_REPEATS = 4;

const key = (unit: string) => unit.trim().toLowerCase();

/**
 * Keeps a turn's text out of repetition loops. When a unit completes the (MAX_REPEATS + 1)-th back-to-back copy
 * of a pattern of 1-16 units, that copy is dropped (unless part of it was let through by an earlier call: then it
 * stays whole), and so is every following unit that goes on with the pattern; the first unit that does not ends
 * the loop and is judged afresh.
 */
export class RepetitionGuard {
  /** keys of the turn's units so far */
  private readonly said: string[] = [];
  private loop: { pattern: string[]; next: number } | undefined;

  /** The units that may follow the turn's text so far, in order; they become its text. */
  admit(units: string[]): string[] {
    const kept: string[] = [];
    for (const unit of units) {
      const k = key(unit);
      if (this.loop) {
        const { pattern, next } = this.loop;
        if (k === pattern[next]) {
          this.loop.next = (next + 1) % pattern.length;
          continue;
        }
        this.loop = undefined;
      }
      this.said.push(k);
      const n = this.loopLength();
      if (n === 0) {
        kept.push(unit);
        continue;
      }
      this.loop = { pattern: this.said.slice(-n), next: 0 };
      if (kept.length >= n - 1) {
        kept.splice(kept.length - (n - 1));
        this.said.splice(this.said.length - n);
      } else {
        kept.push(unit);
      }
    }
    return kept;
  }

  /** The length of the shortest pattern that ends the text repeated more than MAX_REPEATS times, or 0. */
  private loopLength(): number {
    const s = this.said;
    const end = s.length;
    for (let n = 1; n <= MAX_PATTERN_UNITS && n * (MAX_REPEATS + 1) <= end; n++) {
      let repeats = 1;
      while (repeats <= MAX_REPEATS && sameRun(s, end - n, end - n * (repeats + 1), n)) repeats++;
      if (repeats > MAX_REPEATS) return n;
    }
    return 0;
  }
}

function sameRun(s: readonly string[], a: number, b: number, n: number): boolean {
  for (let k = 0; k < n; k++) if (s[a + k] !== s[b + k]) return false;
  return true;
}
