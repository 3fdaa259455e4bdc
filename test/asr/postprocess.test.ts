import { describe, expect, it } from 'vitest';
import { TranscriptDeltas, detectAndFixRepetitions, mergeLanguages, parseAsrOutput } from '../../src/asr/postprocess.js';

/*
 * Expected values are what qwen-asr 0.0.6 qwen_asr/inference/utils.py returns for the same input
 * (detect_and_fix_repetitions, parse_asr_output, merge_languages); Python indexes by code point.
 */

const PATTERN_21 = 'abcdefghijklmnopqrstu';

describe('detectAndFixRepetitions', () => {
  it.each<[string, string, string]>([
    ['a run longer than 20 collapses to one character', 'a'.repeat(25) + 'b', 'ab'],
    ['a run of exactly 20 stays (20 is not > 20)', 'a'.repeat(20), 'a'.repeat(20)],
    ['a run of 21 collapses', 'a'.repeat(21), 'a'],
    ['a two-character pattern repeated 25 times', 'ha'.repeat(25), 'ha'],
    ['a word pattern after a sentence', 'Hello world. ' + 'again '.repeat(25), 'Hello world. again '],
    ['a normal sentence', 'The quick brown fox jumps over the lazy dog, and then it runs away.', 'The quick brown fox jumps over the lazy dog, and then it runs away.'],
    ['shorter than 40 characters with 10 repeats', 'abc'.repeat(10) + 'xyz', 'abc'.repeat(10) + 'xyz'],
    ['39 characters, 13 repeats', 'abc'.repeat(13), 'abc'.repeat(13)],
    ['19 repeats either side of a break', 'ab'.repeat(19) + 'c' + 'ab'.repeat(19), 'ab'.repeat(19) + 'c' + 'ab'.repeat(19)],
    ['repairs after a first repair (char run, then pattern)', 'x'.repeat(30) + ' mid ' + 'ab'.repeat(25), 'x mid ab'],
    ['recursion: a second pattern right after the first', 'ab'.repeat(25) + 'cd'.repeat(25), 'abcd'],
    ['recursion: a second pattern later in the text', 'ab'.repeat(25) + ' then ' + 'xyz'.repeat(20) + ' end', 'ab then xyz end'],
    ['a 20-character pattern is the longest repaired', PATTERN_21.slice(0, 20).repeat(20), PATTERN_21.slice(0, 20)],
    ['a 21-character pattern is not repaired', PATTERN_21.repeat(20), PATTERN_21.repeat(20)],
    ['CJK character run', '啊'.repeat(50), '啊'],
    ['CJK pattern', '你好'.repeat(25), '你好'],
    ['emoji run of 25 code points', '😀'.repeat(25), '😀'],
    ['emoji run of 21 code points', '😀'.repeat(21), '😀'],
    // 20 code points (40 UTF-16 units): Python leaves it; a UTF-16 port would see a 2-unit pattern 20 times.
    ['emoji run of exactly 20 code points stays', '😀'.repeat(20), '😀'.repeat(20)],
    ['emoji with a skin-tone modifier (2 code points) repeated 20 times', '👍🏽'.repeat(20), '👍🏽'],
    ['emoji in a mixed pattern', 'Hi ' + '😀'.repeat(19) + ' and ' + 'ab😀'.repeat(20), 'Hi ' + '😀'.repeat(19) + ' and ab😀'],
    ['empty string', '', ''],
  ])('%s', (_name, input, expected) => {
    expect(detectAndFixRepetitions(input)).toBe(expected);
  });

  it('honours a custom threshold', () => {
    expect(detectAndFixRepetitions('ab'.repeat(10), 10)).toBe('ab');
    expect(detectAndFixRepetitions('abc'.repeat(13), 13)).toBe('abc');
    expect(detectAndFixRepetitions('a'.repeat(6) + 'b', 5)).toBe('ab');
    expect(detectAndFixRepetitions('a'.repeat(5) + 'b', 5)).toBe('aaaaab');
  });

  it('never leaves a lone surrogate behind', () => {
    const out = detectAndFixRepetitions('x' + '😀'.repeat(30) + '🫠'.repeat(22) + 'y');
    expect(out).toBe('x😀🫠y');
    expect(out).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
  });
});

describe('parseAsrOutput', () => {
  it.each<[string, string | undefined, { language: string; text: string }]>([
    ['language English<asr_text>Hello, world!', undefined, { language: 'English', text: 'Hello, world!' }],
    ['language None<asr_text>', undefined, { language: '', text: '' }],
    ['language none<asr_text> hi ', undefined, { language: '', text: 'hi' }],
    ['Hello', undefined, { language: '', text: 'Hello' }],
    ['  Hi there ', 'French', { language: 'French', text: 'Hi there' }],
    ['language chinese<asr_text>你好', undefined, { language: 'Chinese', text: '你好' }],
    ['detected\nlanguage German\n<asr_text> Guten Tag', undefined, { language: 'German', text: 'Guten Tag' }],
    ['', undefined, { language: '', text: '' }],
    ['  \n ', undefined, { language: '', text: '' }],
    ['', 'English', { language: '', text: '' }],
    ['language<asr_text>text', undefined, { language: '', text: 'text' }],
    ['language English\r\nmore<asr_text>x', undefined, { language: 'English', text: 'x' }],
    ['language ENGLISH<asr_text>Hi<asr_text>there', undefined, { language: 'English', text: 'Hi<asr_text>there' }],
    ['foo\u2028language French<asr_text>Salut', undefined, { language: 'French', text: 'Salut' }],
    ['foo\x1clanguage french<asr_text>x', undefined, { language: 'French', text: 'x' }],
    ['  language Japanese <asr_text>  こんにちは  ', undefined, { language: 'Japanese', text: 'こんにちは' }],
  ])('%j (forced %s)', (raw, forced, expected) => {
    expect(parseAsrOutput(raw, forced)).toEqual(expected);
  });

  it('repairs repetitions before parsing', () => {
    expect(parseAsrOutput('language English<asr_text>' + 'ha'.repeat(25))).toEqual({ language: 'English', text: 'ha' });
    expect(parseAsrOutput('language English<asr_text>' + 'a'.repeat(30) + 'b')).toEqual({ language: 'English', text: 'ab' });
    expect(parseAsrOutput('wow' + '!'.repeat(40), 'English')).toEqual({ language: 'English', text: 'wow!' });
  });

  it('treats forced-language output as plain text, tag and all (qwen-asr 0.0.6)', () => {
    expect(parseAsrOutput('language English<asr_text>Hi', 'English')).toEqual({ language: 'English', text: 'language English<asr_text>Hi' });
  });
});

describe('mergeLanguages', () => {
  it('lists languages in the order first heard, each once, without blanks', () => {
    expect(mergeLanguages(['Chinese', 'English', 'English', '', 'Chinese'])).toEqual(['Chinese', 'English']);
    expect(mergeLanguages(['English', ' ', 'English'])).toEqual(['English']);
    expect(mergeLanguages([' German ', 'German'])).toEqual(['German']);
    expect(mergeLanguages([])).toEqual([]);
    expect(mergeLanguages(['', ''])).toEqual([]);
  });
});

describe('TranscriptDeltas', () => {
  /** Deltas after each piece, then what end() adds. */
  const run = (forced: string | undefined, pieces: string[]) => {
    const deltas = new TranscriptDeltas(forced);
    const streamed = pieces.map((p) => deltas.push(p));
    return { streamed, last: deltas.end(), raw: deltas.rawText };
  };
  const total = (r: ReturnType<typeof run>) => r.streamed.join('') + r.last;

  it('holds back and drops the language header in auto mode', () => {
    const r = run(undefined, ['language', ' English', '<asr_text>', 'Hel', 'lo']);
    expect(r.streamed.slice(0, 3)).toEqual(['', '', '']);
    expect(total(r)).toBe('Hello');
    expect(r.raw).toBe('language English<asr_text>Hello');
  });

  it('finds the tag when pieces split it, and drops white space right after it', () => {
    expect(total(run(undefined, ['language English', '<asr', '_text>Hi', ' there']))).toBe('Hi there');
    expect(total(run(undefined, ['language English<', 'asr_te', 'xt', '>', 'Yes']))).toBe('Yes');
    expect(total(run(undefined, ['language English<asr_text> ', '  ', '\n Hi ', 'x']))).toBe('Hi x');
  });

  it('streams a long sentence while it is decoded, holding back only a short tail', () => {
    const words = 'The quick brown fox jumps over the lazy dog and then runs far away into the woods'.split(' ');
    const r = run('English', words.map((w, i) => (i ? ` ${w}` : w)));
    expect(total(r)).toBe(words.join(' '));
    const beforeEnd = r.streamed.join('');
    expect(beforeEnd.length).toBeGreaterThan(words.join(' ').length - 25);
  });

  it('never streams trailing white space the final text trims', () => {
    const r = run('English', [' ', ' Hello', ' world', '  ']);
    expect(r.streamed.join('')).not.toMatch(/\s$/);
    expect(total(r)).toBe('Hello world');
  });

  it('yields nothing for no speech', () => {
    expect(total(run(undefined, ['language None<asr_text>']))).toBe('');
    expect(total(run(undefined, ['language', ' None', '<asr_text>', '']))).toBe('');
  });

  it('streams the whole output as text when the model never writes the tag, as parsing does', () => {
    const r = run(undefined, ['just', ' some', ' words']);
    expect(r.streamed.join('')).toBe('');
    expect(r.last).toBe(parseAsrOutput('just some words').text);
  });

  it('adds up to the repaired text when a repetition forms, never streaming what the repair removes', () => {
    const cases: [string | undefined, string[]][] = [
      ['English', ['Stop', ...Array<string>(30).fill(' again'), '.']],
      [undefined, ['language English<asr_text>', 'Go', ...Array<string>(40).fill(' go')]],
      ['English', ['Ha', ...Array<string>(45).fill('h'), ' done']],
      ['Chinese', ['我们', ...Array<string>(25).fill('好的'), '再见']],
      [undefined, ['language English<asr_text>', 'la', ...Array<string>(21).fill(' la la'), ' end']],
    ];
    for (const [forced, pieces] of cases) {
      const r = run(forced, pieces);
      const final = parseAsrOutput(pieces.join(''), forced).text;
      expect(final.length, pieces.join('')).toBeLessThan(pieces.join('').length - 40);
      let sent = '';
      for (const d of r.streamed) {
        sent += d;
        expect(final.startsWith(sent), `${JSON.stringify(sent)} is not a prefix of ${JSON.stringify(final)}`).toBe(true);
      }
      expect(total(r)).toBe(final);
    }
  });

  it('adds up to the parsed text of every prefix cut into pieces at random', () => {
    const texts = ['language English<asr_text>a b a b a b a b a b a b a b a b a b a b a b a b a b a b end', 'language German<asr_text>Guten Tag, wie geht es Ihnen heute?'];
    let seed = 7;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (const text of texts) {
      for (let trial = 0; trial < 20; trial++) {
        const pieces: string[] = [];
        for (let i = 0; i < text.length; ) {
          const n = 1 + Math.floor(rand() * 4);
          pieces.push(text.slice(i, i + n));
          i += n;
        }
        expect(total(run(undefined, pieces))).toBe(parseAsrOutput(text).text);
      }
    }
  });

  it('adds up to the parsed text of long outputs that mix words, repeats, runs, blanks and emoji (settled repair)', () => {
    let seed = 11;
    const rand = (n: number) => Math.floor(((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * n);
    const words = ['the', 'fox', 'a', 'la', '好的', '😀', 'go go', 'ab'];
    const segment = (): string => {
      const w = words[rand(words.length)]!;
      switch (rand(5)) {
        case 0:
          return ` ${w}`.repeat(15 + rand(15));
        case 1:
          return w.slice(0, 1).repeat(15 + rand(15));
        case 2:
          return ' '.repeat(1 + rand(3)) + '\n'.repeat(rand(2));
        default:
          return ` ${w}${rand(3) ? '' : '.'}`;
      }
    };
    for (let trial = 0; trial < 40; trial++) {
      let text = '';
      while (text.length < 300 + rand(1200)) text += segment();
      const forced = rand(2) ? 'English' : undefined;
      const raw = forced ? text : `language English<asr_text>${text}`;
      const pieces: string[] = [];
      const cps = Array.from(raw);
      for (let i = 0; i < cps.length; ) {
        const n = 1 + rand(5);
        pieces.push(cps.slice(i, i + n).join(''));
        i += n;
      }
      const r = run(forced, pieces);
      expect(r.raw).toBe(raw);
      expect(total(r), JSON.stringify(raw)).toBe(parseAsrOutput(raw, forced).text);
    }
  });
});
