import { type Language, toLanguage } from '../pool/result.js';

/**
 * OpenAI's language vocabulary: the codes its `language` parameter takes and the names its responses give.
 * Codes accepted for each language, primary first. OpenAI's `language` parameter is ISO-639-1.
 * Cantonese has none: 'yue' (ISO-639-3) is primary, and resolveLanguage maps the 'zh-HK'/'zh-yue' tags
 * many clients use. Filipino's primary is 'tl' (ISO-639-1, Tagalog), what Whisper-style clients send;
 * 'fil' (ISO-639-2/3) is accepted too.
 */
const CODES: Record<Language, readonly [string, ...string[]]> = {
  Chinese: ['zh'],
  English: ['en'],
  Cantonese: ['yue'],
  Arabic: ['ar'],
  German: ['de'],
  French: ['fr'],
  Spanish: ['es'],
  Portuguese: ['pt'],
  Indonesian: ['id'],
  Italian: ['it'],
  Korean: ['ko'],
  Russian: ['ru'],
  Thai: ['th'],
  Vietnamese: ['vi'],
  Japanese: ['ja'],
  Turkish: ['tr'],
  Hindi: ['hi'],
  Malay: ['ms'],
  Dutch: ['nl'],
  Swedish: ['sv'],
  Danish: ['da'],
  Finnish: ['fi'],
  Polish: ['pl'],
  Czech: ['cs'],
  Filipino: ['tl', 'fil'],
  Persian: ['fa'],
  Greek: ['el'],
  Romanian: ['ro'],
  Hungarian: ['hu'],
  Macedonian: ['mk'],
};

const BY_CODE = new Map<string, Language>(
  (Object.entries(CODES) as [Language, readonly string[]][]).flatMap(([language, codes]) =>
    codes.map((code) => [code, language] as const),
  ),
);

/** A BCP-47-like tag: 2-3 letter primary subtag, then subtags such as a script or region. */
const TAG = /^[a-z]{2,3}(?:-[a-z0-9]+)*$/;

/**
 * The language for an ISO code ('en', 'EN', 'en-US', 'pt_BR', 'yue', 'zh-HK') or a name in any case
 * ('english'); undefined when the model does not know it. A Chinese tag with a Hong Kong region or a
 * 'yue' subtag ('zh-Hant-HK') is Cantonese, since that is what is spoken there.
 */
export function resolveLanguage(input: string): Language | undefined {
  const tag = input.trim().toLowerCase().replaceAll('_', '-');
  if (TAG.test(tag)) {
    const [primary = '', ...rest] = tag.split('-');
    if (primary === 'zh' && rest.some((s) => s === 'hk' || s === 'yue')) return 'Cantonese';
    const byPrimary = BY_CODE.get(primary);
    if (byPrimary) return byPrimary;
  }
  return toLanguage(input);
}

/** The primary code of a language ('English' -> 'en', 'Cantonese' -> 'yue'). */
export function languageCode(l: Language): string {
  return CODES[l][0];
}

/** The lowercase full name OpenAI's verbose_json uses ('English' -> 'english'; '' for no speech stays ''). */
export function openAiLanguageName(language: string): string {
  return language.trim().toLowerCase();
}
