import { describe, expect, it } from 'vitest';
import { languageCode, openAiLanguageName, resolveLanguage } from '../../src/http/language-codes.js';
import { type Language, SUPPORTED_LANGUAGES } from '../../src/pool/result.js';

/** Written out independently of the module: ISO-639-1, except Cantonese (ISO-639-3) which has none. */
const EXPECTED_CODES: [Language, string][] = [
  ['Chinese', 'zh'], ['English', 'en'], ['Cantonese', 'yue'], ['Arabic', 'ar'], ['German', 'de'],
  ['French', 'fr'], ['Spanish', 'es'], ['Portuguese', 'pt'], ['Indonesian', 'id'], ['Italian', 'it'],
  ['Korean', 'ko'], ['Russian', 'ru'], ['Thai', 'th'], ['Vietnamese', 'vi'], ['Japanese', 'ja'],
  ['Turkish', 'tr'], ['Hindi', 'hi'], ['Malay', 'ms'], ['Dutch', 'nl'], ['Swedish', 'sv'], ['Danish', 'da'],
  ['Finnish', 'fi'], ['Polish', 'pl'], ['Czech', 'cs'], ['Filipino', 'tl'], ['Persian', 'fa'], ['Greek', 'el'],
  ['Romanian', 'ro'], ['Hungarian', 'hu'], ['Macedonian', 'mk'],
];

describe('language codes', () => {
  it('covers exactly the 30 supported languages', () => {
    expect(EXPECTED_CODES.map(([l]) => l).sort()).toEqual([...SUPPORTED_LANGUAGES].sort());
    expect(new Set(EXPECTED_CODES.map(([, c]) => c)).size).toBe(30);
  });

  it.each(EXPECTED_CODES)('%s has primary code %s', (language, code) => {
    expect(languageCode(language)).toBe(code);
  });

  it.each(EXPECTED_CODES)('%s resolves from its code %s in any case', (language, code) => {
    expect(resolveLanguage(code)).toBe(language);
    expect(resolveLanguage(code.toUpperCase())).toBe(language);
    expect(resolveLanguage(` ${code} `)).toBe(language);
  });

  it.each(EXPECTED_CODES)('%s resolves from its name in any case', (language) => {
    expect(resolveLanguage(language)).toBe(language);
    expect(resolveLanguage(language.toLowerCase())).toBe(language);
    expect(resolveLanguage(language.toUpperCase())).toBe(language);
  });

  it('round-trips every language through its primary code', () => {
    for (const l of SUPPORTED_LANGUAGES) expect(resolveLanguage(languageCode(l))).toBe(l);
  });

  it.each<[string, Language]>([
    ['fil', 'Filipino'],
    ['FIL', 'Filipino'],
    ['fil-PH', 'Filipino'],
    ['tl-PH', 'Filipino'],
    ['yue', 'Cantonese'],
    ['yue-Hant-HK', 'Cantonese'],
    ['zh-HK', 'Cantonese'],
    ['zh_hk', 'Cantonese'],
    ['zh-yue', 'Cantonese'],
    ['ZH-YUE', 'Cantonese'],
    ['zh-Hant-HK', 'Cantonese'],
    ['zh', 'Chinese'],
    ['zh-CN', 'Chinese'],
    ['zh-TW', 'Chinese'],
    ['zh-Hans', 'Chinese'],
    ['zh-Hant-TW', 'Chinese'],
    ['en-US', 'English'],
    ['en-gb', 'English'],
    ['en_US', 'English'],
    ['pt-BR', 'Portuguese'],
    ['pt-PT', 'Portuguese'],
    ['es-419', 'Spanish'],
    ['fr-CA', 'French'],
    ['mk-MK', 'Macedonian'],
  ])('region/script variant %s -> %s', (input, language) => {
    expect(resolveLanguage(input)).toBe(language);
  });

  it.each(['', '  ', 'xx', 'xx-US', 'eng', 'en-', '-en', 'en US', 'auto', 'Klingon', 'Tagalog', 'Mandarin', 'english!', 'zh-hk-'])(
    'unknown input %j is undefined',
    (input) => {
      expect(resolveLanguage(input)).toBeUndefined();
    },
  );

  it.each<[string, string]>([
    ['English', 'english'],
    ['Cantonese', 'cantonese'],
    ['Macedonian', 'macedonian'],
    ['', ''],
  ])('openAiLanguageName(%j) = %j', (input, expected) => {
    expect(openAiLanguageName(input)).toBe(expected);
  });
});
