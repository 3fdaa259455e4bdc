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
  it('keeps order, drops consecutive duplicates and blanks', () => {
    expect(mergeLanguages(['Chinese', 'English', 'English', '', 'Chinese'])).toBe('Chinese,English,Chinese');
    expect(mergeLanguages(['English', ' ', 'English'])).toBe('English');
    expect(mergeLanguages([' German ', 'German'])).toBe('German');
    expect(mergeLanguages([])).toBe('');
    expect(mergeLanguages(['', ''])).toBe('');
  });
});

describe('TranscriptDeltas', () => {
  const run = (forced: boolean, pieces: string[]) => {
    const deltas = new TranscriptDeltas(forced);
    return pieces.map((p) => deltas.push(p));
  };

  it('holds back and drops the language header in auto mode', () => {
    expect(run(false, ['language', ' English', '<asr_text>', 'Hel', 'lo'])).toEqual(['', '', '', 'Hel', 'lo']);
  });

  it('finds the tag when pieces split it', () => {
    expect(run(false, ['language English', '<asr', '_text>Hi', ' there'])).toEqual(['', '', 'Hi', ' there']);
    expect(run(false, ['language English<', 'asr_te', 'xt', '>', 'Yes'])).toEqual(['', '', '', '', 'Yes']);
  });

  it('drops white space right after the tag, keeps it later', () => {
    expect(run(false, ['language English<asr_text>', ' Hi', ' you'])).toEqual(['', 'Hi', ' you']);
    expect(run(false, ['language English<asr_text> ', '  ', '\n Hi ', 'x'])).toEqual(['', '', 'Hi ', 'x']);
  });

  it('passes text through in forced mode from the first non-blank piece', () => {
    expect(run(true, [' ', ' Hello', ' world', '  '])).toEqual(['', 'Hello', ' world', '  ']);
    expect(run(true, ['Bonjour'])).toEqual(['Bonjour']);
  });

  it('yields nothing for no speech', () => {
    expect(run(false, ['language None<asr_text>'])).toEqual(['']);
    expect(run(false, ['language', ' None', '<asr_text>', ''])).toEqual(['', '', '', '']);
  });

  it('adds up to the parsed text when nothing needs repair', () => {
    const pieces = ['language', ' English', '<asr', '_text>', ' Hello', ',', ' world', '!'];
    const joined = run(false, pieces).join('');
    expect(joined).toBe(parseAsrOutput(pieces.join('')).text);
    expect(joined).toBe('Hello, world!');
  });
});
