import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AsrEngine } from '../../src/asr/engine.js';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import { transcribe, type TranscribeOptions } from '../../src/asr/transcribe.js';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { STOP_IDS } from '../../tools/full-size/decoder.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { MAX_SCRIPT_WORDS, scriptWords, textScript, type TextScript } from '../../tools/full-size/script.js';
import { tsxScript } from '../support/cli.js';
import { clipPcm24, RealtimeClient, wsURL } from '../support/realtime-client.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { decodeBatch, openFixtureDecoder } from './decoder-rows.js';

/*
 * The full-size stand-in with --scripted-text, built at toy widths (the same builder and graphs): it says
 * `language English<asr_text>` and the first words of its script, as many as its audio allows, so partials of a
 * growing turn agree and live text can be measured at real size.
 */

const SR = 16000;
const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
const defaults: TranscribeOptions = { chunkSeconds: 30, tokensPerSecond: 8, tokenBudgetBase: 32, whole: true };
const quiet = { warn: () => {}, info: () => {} };

let dir: string;
let script: TextScript;
/** the transcript the script gives `audioRows` encoder rows */
const said = (audioRows: number) => script.words.slice(0, scriptWords(script, audioRows)).join('');

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'scripted-text-'));
  writeFullSizeModel(dir, { batch: 'dynamic', kv: 'float16', seed: 5, dims: TOY_DIMS, scriptedText: true });
  script = textScript(Tokenizer.fromModelDir(dir), TOY_DIMS.decoder.hidden);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('is refused together with --stop-after', () => {
  expect(() => writeFullSizeModel(join(dir, 'both'), { batch: 'dynamic', kv: 'float16', seed: 1, dims: TOY_DIMS, stopAfter: 3, scriptedText: true })).toThrow(
    /exclude each other/,
  );
});

it('is refused on the command line together with --stop-after, or without --full-size, in one line', async () => {
  for (const [args, message] of [
    [['--full-size', '--stop-after', '3', '--scripted-text'], '--stop-after and --scripted-text exclude each other: the script decides when to stop'],
    [['--scripted-text'], '--scripted-text and --stop-after are for --full-size'],
  ] as const) {
    const r = await tsxScript('tools/fixture-model.ts', [join(dir, 'cli'), ...args], { timeoutMs: 60_000 });
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe(message);
    expect(existsSync(join(dir, 'cli'))).toBe(false);
  }
});

it('has distinct one-token words, one lm_head channel each, enough for a 30 s turn at full size', () => {
  const full = textScript(Tokenizer.fromModelDir(dir), 2048);
  expect(full.words).toHaveLength(MAX_SCRIPT_WORDS);
  expect(scriptWords(full, 30 * 13)).toBe(97);
  expect(new Set(full.words.map((w) => w.trim().toLowerCase())).size).toBe(full.words.length);
  expect(full.tokens).toHaveLength(3 + MAX_SCRIPT_WORDS);
  expect(script.tokens.length).toBeLessThanOrEqual(TOY_DIMS.decoder.hidden);
  expect(JSON.parse(readFileSync(join(dir, 'fixture.json'), 'utf8'))).toMatchObject({ stopAfter: null, scriptedText: { words: script.words } });
});

describe('through the engine (lean graphs, int8 activations)', () => {
  let engine: AsrEngine;
  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: dir, device: 'cpu', logger: quiet, maxBatch: 8 });
  });
  afterAll(() => engine.release());

  it('says the header and more of the script the longer the audio, each row of a batch its own', async () => {
    const pcm = clip('echo');
    const lengths = [0.6, 1, 2.5, 4, 7];
    const alone = [];
    for (const s of lengths) alone.push(await transcribe(engine, pcm.subarray(0, s * SR), defaults));
    const words = alone.map((r) => r.text.split(' ').length);
    expect(words).toEqual([...words].sort((a, b) => a - b));
    expect(words.at(-1)).toBeGreaterThan(15);
    for (const r of alone) {
      expect(r.languages).toEqual(['English']);
      expect(r.text).toBe(said(r.usage.audioTokens));
      // the header's 3 tokens, then one per word, then <|im_end|> (not counted)
      expect(r.usage.generatedTokens).toBe(3 + scriptWords(script, r.usage.audioTokens));
      expect(r.truncated).toBe(false);
    }
    // all at once: they share decode steps and each still says its own part of the script
    const together = await Promise.all(lengths.map((s) => transcribe(engine, pcm.subarray(0, s * SR), defaults)));
    expect(together.map((r) => r.text)).toEqual(alone.map((r) => r.text));
    expect(together.reduce((a, r) => a + r.timings.stepRows, 0) / together.reduce((a, r) => a + r.timings.steps, 0)).toBeGreaterThan(1.5);
  });

  it('continues a forced prefix with the next word of the script', async () => {
    const pcm = clip('noise').subarray(0, 5 * SR);
    const whole = await transcribe(engine, pcm, defaults);
    const k = scriptWords(script, whole.usage.audioTokens);
    for (const m of [0, 1, 4, k - 1, k]) {
      const text = script.words.slice(0, m).join('');
      const deltas: string[] = [];
      const r = await transcribe(engine, pcm, { ...defaults, prefix: { language: 'English', text }, onDelta: (d) => deltas.push(d) });
      expect(r.text, `m=${m}`).toBe(whole.text);
      expect(deltas.join('')).toBe(whole.text.slice(text.length));
      expect(r.usage.generatedTokens, `m=${m}`).toBe(k - m);
    }
  });
});

describe('the graphs by hand, fp32 activations, left-padded batch', () => {
  it('every row says its own script; the script token wins every step by a wide margin', async () => {
    const d = await openFixtureDecoder(dir);
    try {
      const frames = [150, 420, 260];
      const seqs = await Promise.all(frames.map((f, i) => d.sequence(f, 0.3 * i - 0.2)));
      /** per step and row: the best logit's lead over the second, by the token that won */
      const margins: { token: number; lead: number }[] = [];
      const rows = await decodeBatch(d, seqs, {
        steps: 20,
        logits: (_, t) => {
          const [batch, , vocab] = t.dims as [number, number, number];
          const data = t.data as Float32Array;
          for (let r = 0; r < batch; r++) {
            const row = data.subarray(((r + 1) * data.length) / batch - vocab, ((r + 1) * data.length) / batch);
            const [second, best] = Float32Array.from(row).sort().slice(-2);
            margins.push({ token: row.indexOf(best!), lead: best! - second! });
          }
        },
      });
      rows.forEach((tokens, r) => {
        const audioRows = seqs[r]!.ids.filter((id) => id === d.tokenizer.tokenId('<|audio_pad|>')).length;
        const n = script.headerTokens + scriptWords(script, audioRows);
        expect(tokens.slice(0, n)).toEqual(script.tokens.slice(0, n));
        expect(tokens.length).toBeGreaterThan(n);
        expect(new Set(tokens.slice(n))).toEqual(new Set([STOP_IDS.imEnd]));
      });
      // Script tokens: one weight of 15 x 8 typical scales times 64 against at most 15 x 4/3 typical scales times 64
      // in a random row (~150 logits apart at this width, ~19 at full width, where scales are 8x smaller).
      const lead = (stop: boolean) => Math.min(...margins.filter((m) => (m.token === STOP_IDS.imEnd) === stop).map((m) => m.lead));
      expect(lead(false)).toBeGreaterThan(100);
      // <|im_end|> (ones into its constant row): 15 x 1.5 x 2^-6 x 64 = 22.5 against sums of 64 random weights, the
      // smallest lead at this toy width (at full width 90 against a spread of ~3.5: over 70).
      expect(lead(true)).toBeGreaterThan(3);
    } finally {
      await d.release();
    }
  });
});

describe('a live session on the real server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ MODEL_DIR: dir });
  });
  afterAll(() => server.stop('test done'));

  it('streams the script as deltas while the audio arrives; the transcript is the deltas joined', async () => {
    const c = await RealtimeClient.connect(wsURL(server.baseURL));
    await c.next('session.created');
    c.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { turn_detection: null } } } });
    await c.next('session.updated');
    await c.stream(clipPcm24('echo'), { bytesPerSecond: 48000, speed: 2 });
    const whileSpeaking = c.events.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta').length;
    c.send({ type: 'input_audio_buffer.commit' });
    const completed = await c.next('conversation.item.input_audio_transcription.completed');
    const deltas = c.events.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta').map((e) => e.delta as string);
    await c.close();

    expect(whileSpeaking).toBeGreaterThanOrEqual(3);
    expect(deltas[0]).toMatch(/^The( |$)/);
    expect(completed.transcript).toBe(deltas.join(''));
    const usage = completed.usage as { input_token_details: { audio_tokens: number } };
    expect(completed.transcript).toBe(said(usage.input_token_details.audio_tokens));
  });
});
