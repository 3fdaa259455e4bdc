import { describe, expect, it } from 'vitest';
import { LocalAgreement, MAX_REPEATS, RepetitionGuard, textUnits } from '../../src/live/agreement.js';

describe('textUnits', () => {
  it('splits spaced text into words that keep their leading space, and joins back without trailing space', () => {
    expect(textUnits('Hello, world  how are you? ')).toEqual(['Hello,', ' world', '  how', ' are', ' you?']);
    expect(textUnits(' leading')).toEqual([' leading']);
    expect(textUnits('')).toEqual([]);
  });

  it('splits unspaced scripts into characters, with their punctuation and combining marks', () => {
    expect(textUnits('今天天气很好。OK')).toEqual(['今', '天', '天', '气', '很', '好', '。', 'OK']);
    expect(textUnits('こんにちは')).toEqual(['こ', 'ん', 'に', 'ち', 'は']);
    // Thai: a consonant keeps its vowel and tone marks
    expect(textUnits('สวัสดี')).toEqual(['ส', 'วั', 'ส', 'ดี']);
  });
});

describe('LocalAgreement', () => {
  const words = (s: string) => textUnits(s);

  it('emits what two consecutive hypotheses agree on, marked by the first of them', () => {
    const a = new LocalAgreement<number>();
    expect(a.accept(words('The quick'), 1)).toEqual({ stable: [], mark: undefined });
    // the earlier hypothesis cut a word short: only the whole words they share are stable
    let r = a.accept(words('The quick brown fo'), 2);
    expect(r).toEqual({ stable: ['The', ' quick'], mark: 1 });
    a.emitted(r.stable.length);
    // the next hypothesis is forced to continue "The quick": it speaks only of what follows
    r = a.accept(words(' brown fox jumps'), 3);
    expect(r).toEqual({ stable: [' brown'], mark: 2 });
    a.emitted(1);
    r = a.accept(words(' fox jumps over'), 4);
    expect(r).toEqual({ stable: [' fox', ' jumps'], mark: 3 });
  });

  it('emits nothing while hypotheses disagree at their start', () => {
    const a = new LocalAgreement<number>();
    a.accept(words('Their quick'), 1);
    expect(a.accept(words('The quick brown'), 2).stable).toEqual([]);
    expect(a.accept(words('The quick brown fox'), 3).stable).toEqual(['The', ' quick', ' brown']);
  });
});

describe('RepetitionGuard', () => {
  it(`lets a word repeat ${MAX_REPEATS} times in a row, not more`, () => {
    const g = new RepetitionGuard();
    const again = textUnits('and again again again again again again');
    expect(g.admit(again).join('')).toBe('and again again again again');
    // the loop stays out across calls (later partials and the final), but new speech gets through
    expect(g.admit(textUnits(' again again then stop')).join('')).toBe(' then stop');
  });

  it('drops a looping phrase from its fifth copy on, case- and space-insensitively, until the speech moves on', () => {
    const g = new RepetitionGuard();
    const copies = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 ? 'Thank You so much' : 'thank you  so much')).join(' ');
    expect(g.admit(textUnits(`I said ${copies(8)} thank`)).join('')).toBe(`I said ${copies(MAX_REPEATS)}`);
    expect(g.admit(textUnits(' you so much thank you so much and then we left')).join('')).toBe(' and then we left');
  });

  it('keeps a fifth copy whole when its start was already let through', () => {
    const g = new RepetitionGuard();
    const four = 'one two one two one two one two';
    expect(g.admit(textUnits(`${four} one`)).join('')).toBe(`${four} one`);
    expect(g.admit(textUnits(' two one two three')).join('')).toBe(' two three');
  });

  it('keeps ordinary speech with repeated words untouched', () => {
    const g = new RepetitionGuard();
    const text = 'no no no I mean that that is the one that I want, that is it';
    expect(g.admit(textUnits(text)).join('')).toBe(text);
  });

  it('catches loops of characters in unspaced scripts', () => {
    const g = new RepetitionGuard();
    expect(g.admit(textUnits('好的' + '谢谢'.repeat(10))).join('')).toBe('好的' + '谢谢'.repeat(MAX_REPEATS / 2));
  });
});
