/** The 30 languages Qwen3-ASR recognises, in the reference's canonical spelling (qwen_asr utils.py). */
export const SUPPORTED_LANGUAGES = [
  'Chinese', 'English', 'Cantonese', 'Arabic', 'German', 'French', 'Spanish', 'Portuguese',
  'Indonesian', 'Italian', 'Korean', 'Russian', 'Thai', 'Vietnamese', 'Japanese', 'Turkish',
  'Hindi', 'Malay', 'Dutch', 'Swedish', 'Danish', 'Finnish', 'Polish', 'Czech', 'Filipino',
  'Persian', 'Greek', 'Romanian', 'Hungarian', 'Macedonian',
] as const;

export type Language = (typeof SUPPORTED_LANGUAGES)[number];

/** Reference canonicalisation: first letter upper case, the rest lower case. */
export function normalizeLanguageName(name: string): string {
  const s = name.trim();
  return s.slice(0, 1).toUpperCase() + s.slice(1).toLowerCase();
}

/** The canonical language for a name in any letter case, or undefined when the model does not know it. */
export function toLanguage(name: string): Language | undefined {
  const canonical = normalizeLanguageName(name);
  return (SUPPORTED_LANGUAGES as readonly string[]).includes(canonical) ? (canonical as Language) : undefined;
}
