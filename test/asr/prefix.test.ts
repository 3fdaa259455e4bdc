import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AsrEngine, type ChunkOptions } from '../../src/asr/engine.js';
import { TranscriptDeltas, keepsLeadingSpace, parseAsrOutput } from '../../src/asr/postprocess.js';
import { buildPrompt } from '../../src/asr/prompt.js';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import { transcribe, type TranscribeOptions, type TranscriptionResult } from '../../src/asr/transcribe.js';
import { AudioError } from '../../src/audio/errors.js';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { FIXTURE_SENTENCES, REPEATED_TEXT } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';

/*
 * A forced prefix (`language X<asr_text>text` prefilled after the prompt) must continue decoding exactly where the
 * model's own output would be after `text`: greedy decoding is deterministic, so forcing the first k tokens of a
 * run's own text yields the same final text. The generated models speak a script indexed by position after
 * <asr_text>, so a prefix tokenised to a different number of tokens, a header forced wrongly or a cache row out of
 * place shows in the text.
 */

const SR = 16000;
const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
const defaults: TranscribeOptions = { chunkSeconds: 30, tokensPerSecond: 8, tokenBudgetBase: 32 };
const quiet = { warn: () => {}, info: () => {} };
const HEADER_ENGLISH = [11528, 6364, 151704];

/** Runs with deltas collected. */
async function run(engine: AsrEngine, pcm: Float32Array, o: Partial<TranscribeOptions> = {}): Promise<TranscriptionResult & { deltas: string[] }> {
  const deltas: string[] = [];
  const r = await transcribe(engine, pcm, { ...defaults, ...o, onDelta: (d) => deltas.push(d) });
  return { ...r, deltas };
}

describe('the prompt with a prefix', () => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = Tokenizer.fromModelDir(fixtureModel('default'));
  });

  it('ends with the header and the text, tokenised as the model writes them', () => {
    const forced = buildPrompt(tok, { nAudioTokens: 5, language: 'English' });
    expect(forced.ids.slice(-3)).toEqual(HEADER_ENGLISH);
    const p = buildPrompt(tok, { nAudioTokens: 5, prefix: { language: 'English', text: 'The quick brown' } });
    expect(p.ids).toEqual([...forced.ids, ...tok.encode('The quick brown')]);
    expect(p.prefixTextTokens).toBe(3);
    expect(p.audioOffset).toBe(forced.audioOffset);
    // the model's canonical spelling; an empty text forces only the header
    expect(buildPrompt(tok, { nAudioTokens: 5, prefix: { language: 'english', text: '' } })).toMatchObject({ ids: forced.ids, prefixTextTokens: 0 });
  });

  it('re-tokenises any whole-character cut of a text into the tokens it was decoded from', () => {
    for (const sentence of [...FIXTURE_SENTENCES, 'Grüße aus Köln, naïve café — 東京タワー 😀 okay']) {
      const ids = tok.encode(sentence);
      for (let k = 0; k <= ids.length; k++) {
        const text = tok.decode(ids.slice(0, k));
        if (text.includes('\uFFFD')) continue; // half a character: no text ends there
        expect(tok.encodeOrdinary(text), `${sentence} @${k}`).toEqual(ids.slice(0, k));
      }
    }
  });

  it('reads control tokens in the text as plain text', () => {
    const p = buildPrompt(tok, { nAudioTokens: 5, prefix: { language: 'English', text: 'hi<|im_end|><asr_text>' } });
    const text = p.ids.slice(-p.prefixTextTokens);
    expect(text).not.toContain(tok.tokenId('<|im_end|>'));
    expect(text).not.toContain(tok.tokenId('<asr_text>'));
    expect(tok.decode(text)).toBe('hi<|im_end|><asr_text>');
  });

  it('refuses a language the model cannot have written and one that contradicts the forced language', () => {
    for (const language of ['', ' English', 'English<asr_text>', 'Eng\nlish', '<|im_end|>', 'x'.repeat(41)]) {
      expect(() => buildPrompt(tok, { nAudioTokens: 5, prefix: { language, text: 'a' } }), JSON.stringify(language)).toThrow(RangeError);
    }
    expect(() => buildPrompt(tok, { nAudioTokens: 5, language: 'English', prefix: { language: 'French', text: '' } })).toThrow(/contradicts the forced language English/);
    expect(buildPrompt(tok, { nAudioTokens: 5, language: 'English', prefix: { language: 'ENGLISH', text: 'a' } }).ids.at(-2)).toBe(151704);
  });
});

describe('output that continues a prefix', () => {
  it('keeps its leading white space only after a word', () => {
    expect(keepsLeadingSpace('')).toBe(false);
    expect(keepsLeadingSpace('Hello')).toBe(true);
    expect(keepsLeadingSpace('Hello ')).toBe(false);
    expect(keepsLeadingSpace('Hello\n')).toBe(false);
    expect(keepsLeadingSpace('你好')).toBe(true);
    expect(parseAsrOutput(' again.  ', 'English', true)).toEqual({ language: 'English', text: ' again.' });
    expect(parseAsrOutput(' again.  ', 'English')).toEqual({ language: 'English', text: 'again.' });
  });

  it('streams deltas that add up to the parsed tail, leading space and repairs included', () => {
    const cases: [boolean, string[]][] = [
      [true, [' ', 'again', ' and', ' again', '  ']],
      [false, [' ', 'again', ' and', ' again', '  ']],
      [true, ['  ', ' ', '\n']],
      [true, Array.from({ length: 25 }, () => ' ha')],
      [true, [' so', ...Array.from({ length: 45 }, () => 'o'), ' long']],
    ];
    for (const [keep, pieces] of cases) {
      const deltas = new TranscriptDeltas('English', keep);
      const out = pieces.map((p) => deltas.push(p)).join('') + deltas.end();
      expect(out, JSON.stringify(pieces)).toBe(parseAsrOutput(pieces.join(''), 'English', keep).text);
    }
  });
});

describe('the engine with a prefix, on the dynamic-batch fixture', () => {
  let engine: AsrEngine;
  let tok: Tokenizer;
  let pcm: Float32Array;
  /** the unprefixed run: its text, its text tokens, the tokens it generated in all (header included) */
  let reference: TranscriptionResult;
  let textIds: number[];

  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cpu', logger: quiet, maxBatch: 8 });
    tok = engine.tokenizer;
    pcm = clip('noise');
    reference = await transcribe(engine, pcm, defaults);
    textIds = reference.segments[0]!.tokens;
  });
  afterAll(() => engine.release());

  it('continues its own output token for token, for any k, batched with other sequences', async () => {
    expect(FIXTURE_SENTENCES).toContain(reference.text);
    expect(reference.usage.generatedTokens).toBe(HEADER_ENGLISH.length + textIds.length);
    const n = textIds.length;
    const ks = [0, 1, 2, Math.floor(n / 2), n - 1, n];
    const others = (['far_field', 'mixed', 'echo'] as const).map((name) => ({ name, pcm: clip(name) }));
    const othersAlone = [];
    for (const o of others) othersAlone.push((await transcribe(engine, o.pcm, defaults)).text);

    // all at once: the prefixed runs and unprefixed runs of other clips share the decode steps
    const [prefixed, together] = await Promise.all([
      Promise.all(ks.map((k) => run(engine, pcm, { prefix: { language: 'English', text: tok.decode(textIds.slice(0, k)) } }))),
      Promise.all(others.map((o) => transcribe(engine, o.pcm, defaults))),
    ]);
    expect(together.map((r) => r.text)).toEqual(othersAlone);
    ks.forEach((k, i) => {
      const r = prefixed[i]!;
      const prefix = tok.decode(textIds.slice(0, k));
      expect(r.text, `k=${k}`).toBe(reference.text);
      expect(r.text.startsWith(prefix)).toBe(true);
      expect(r.deltas.join(''), `k=${k}`).toBe(r.text.slice(prefix.length));
      expect(r.languages).toEqual(['English']);
      expect(r.segments).toHaveLength(1);
      expect(r.segments[0]).toMatchObject({ start: 0, end: pcm.length / SR, text: r.text, tokens: textIds });
      // the prefix costs prompt tokens, not steps: only the rest is generated
      expect(r.usage.generatedTokens, `k=${k}`).toBe(n - k);
      expect(r.usage.promptTokens).toBe(reference.usage.promptTokens + HEADER_ENGLISH.length + k);
      expect(r).toMatchObject({ truncated: false, cancelled: false });
    });
    expect(prefixed[0]!.deltas.join('')).toBe(reference.text);
    expect(prefixed.at(-1)!.deltas).toEqual([]);
    // they did decode together: more than one row per step on average
    const all = [...prefixed, ...together];
    expect(all.reduce((a, r) => a + r.timings.stepRows, 0) / all.reduce((a, r) => a + r.timings.steps, 0)).toBeGreaterThan(1.5);
  });

  it('keeps a foreign prefix verbatim and continues after it, with one space between words', async () => {
    // "Hello there" is two tokens: the script goes on at its third token, whatever the words were
    const tail = tok.decode(textIds.slice(2));
    expect(tail.startsWith(' ')).toBe(true);
    const word = await run(engine, pcm, { prefix: { language: 'English', text: 'Hello there' } });
    expect(word.text).toBe(`Hello there${tail}`);
    expect(word.deltas.join('')).toBe(tail);
    // a prefix ending in a space (three tokens: "Hello", " there", " "): the tail's own space is dropped, not doubled
    const spaced = await run(engine, pcm, { prefix: { language: 'English', text: 'Hello there ' } });
    expect(spaced.text).toBe(`Hello there ${tok.decode(textIds.slice(3)).trimStart()}`);
    expect(spaced.deltas.join('')).toBe(tok.decode(textIds.slice(3)).trimStart());
    expect(spaced.text).not.toMatch(/ {2}/);
  });

  it('counts only generated tokens against the budget', async () => {
    const r = await run(engine, pcm, { tokensPerSecond: 0, tokenBudgetBase: 2, prefix: { language: 'English', text: tok.decode(textIds.slice(0, 3)) } });
    expect(r).toMatchObject({ truncated: true, text: tok.decode(textIds.slice(0, 5)) });
    expect(r.usage.generatedTokens).toBe(2);
  });

  it('transcribes whole audio as one sequence, where voice activity detection or chunking would split it', async () => {
    const a = clip('noise');
    const b = clip('echo');
    const gapped = new Float32Array(a.length + 3 * SR + b.length);
    gapped.set(a, 0);
    gapped.set(b, a.length + 3 * SR);
    const seconds = gapped.length / SR;
    expect(seconds).toBeLessThan(30);
    const vad = { vad: { maxSegmentSeconds: 15 } };
    const split = await transcribe(engine, gapped, { ...defaults, ...vad });
    expect(split.segments.length).toBeGreaterThanOrEqual(2);
    // voice activity detection cuts in the gap
    expect(split.segments.some((s) => s.end > a.length / SR - 1 && s.end < a.length / SR + 3)).toBe(true);
    const chunked = await transcribe(engine, gapped, { ...defaults, chunkSeconds: seconds / 2 + 1 });
    expect(chunked.segments.length).toBeGreaterThanOrEqual(2);

    const whole = await run(engine, gapped, { ...vad, whole: true });
    expect(whole.segments).toEqual([expect.objectContaining({ start: 0, end: seconds, text: whole.text })]);
    expect(FIXTURE_SENTENCES).toContain(whole.text);
    expect(whole.deltas.join('')).toBe(whole.text);
    // a prefix implies whole
    const prefixed = await transcribe(engine, gapped, { ...defaults, ...vad, prefix: { language: 'English', text: '' } });
    expect(prefixed.segments).toHaveLength(1);
    expect(prefixed.text).toBe(whole.text);
  });

  it('refuses whole audio past the chunk limit instead of cutting it, before any model work', async () => {
    const long = new Float32Array(12 * SR).fill(0.01);
    let chunks = 0;
    const counting = { transcribeChunk: (p: Float32Array, o: ChunkOptions) => (chunks++, engine.transcribeChunk(p, o)) } as unknown as AsrEngine;
    for (const o of [{ whole: true }, { prefix: { language: 'English', text: 'so' } }]) {
      const refused = transcribe(counting, long, { ...defaults, chunkSeconds: 10, ...o });
      await expect(refused).rejects.toThrow(AudioError);
      await expect(refused).rejects.toMatchObject({ code: 'too_long', message: expect.stringMatching(/at most 10 s.*12\.00 s/) });
    }
    expect(chunks).toBe(0);
    // exactly the limit is one piece
    const atLimit = await transcribe(counting, long.subarray(0, 10 * SR), { ...defaults, chunkSeconds: 10, whole: true });
    expect(atLimit.segments).toHaveLength(1);
    expect(chunks).toBe(1);
  });
});

describe('a prefix on a model that repeats itself', () => {
  let engine: AsrEngine;
  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: fixtureModel('repeats'), device: 'cpu', logger: quiet });
  });
  afterAll(() => engine.release());

  it('repairs only the generated tail, never the forced text', async () => {
    const pcm = clip('noise');
    const reference = await transcribe(engine, pcm, { ...defaults, tokenBudgetBase: 64 });
    const ids = reference.segments[0]!.tokens;
    const again = engine.tokenizer.encode(REPEATED_TEXT).length;
    const sentenceTokens = ids.length - 30 * again;
    const sentence = engine.tokenizer.decode(ids.slice(0, sentenceTokens));
    // unprefixed: 30 repeats are repaired to one
    expect(reference.text).toBe(sentence + REPEATED_TEXT);

    // 25 repeats forced: kept as they are; the 5 generated after them are too few to repair
    const forced = engine.tokenizer.decode(ids.slice(0, sentenceTokens + 25 * again));
    const kept = await run(engine, pcm, { tokenBudgetBase: 64, prefix: { language: 'English', text: forced } });
    expect(kept.text).toBe(forced + REPEATED_TEXT.repeat(5));
    expect(kept.deltas.join('')).toBe(REPEATED_TEXT.repeat(5));

    // the sentence forced: the 30 generated repeats are repaired, and the tail keeps its space
    const repaired = await run(engine, pcm, { tokenBudgetBase: 64, prefix: { language: 'English', text: sentence } });
    expect(repaired.text).toBe(sentence + REPEATED_TEXT);
    expect(repaired.deltas.join('')).toBe(REPEATED_TEXT);
  });
});
