import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { AsrEngine } from '../../src/asr/engine.js';
import { joinSeparator, tokenBudget, transcribe, type TranscribeOptions } from '../../src/asr/transcribe.js';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { symmetric } from '../../tools/random.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';

const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
const SR = 16000;
const defaults: TranscribeOptions = { chunkSeconds: 30, tokensPerSecond: 8, tokenBudgetBase: 32 };

/** Clips joined with 1.5 s of silence between them, so the splitter has pauses to find. */
function recording(names: string[]): { pcm: Float32Array; bounds: number[] } {
  const gap = 1.5 * SR;
  const parts = names.map(clip);
  const pcm = new Float32Array(parts.reduce((n, p) => n + p.length + gap, 0));
  const bounds: number[] = [];
  let at = 0;
  for (const p of parts) {
    pcm.set(p, at);
    at += p.length;
    bounds.push(at / SR);
    at += gap;
  }
  return { pcm, bounds };
}

describe('transcribe (long audio)', () => {
  let engine: AsrEngine;
  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cpu' });
  });
  afterAll(() => engine.release());

  it('keeps a short recording in one segment', async () => {
    const pcm = clip('noise');
    const r = await transcribe(engine, pcm, defaults);
    expect(r.segments).toHaveLength(1);
    expect(r.segments[0]).toMatchObject({ start: 0, end: pcm.length / SR, text: r.text, language: 'English' });
    expect(r.duration).toBeCloseTo(pcm.length / SR, 9);
    expect(r).toMatchObject({ languages: ['English'], truncated: false, cancelled: false });
    expect(r.usage.generatedTokens).toBeGreaterThan(5);
  });

  it('splits at the pauses past the chunk limit, transcribes each chunk on its own and keeps their times', async () => {
    const names = ['noise', 'echo', 'mixed'];
    const { pcm, bounds } = recording(names);
    const r = await transcribe(engine, pcm, { ...defaults, chunkSeconds: 10 });
    expect(r.segments.length).toBeGreaterThanOrEqual(3);
    // contiguous, covering the whole recording, each no longer than limit + 5 s
    expect(r.segments[0]!.start).toBe(0);
    for (let i = 1; i < r.segments.length; i++) expect(r.segments[i]!.start).toBe(r.segments[i - 1]!.end);
    expect(r.segments.at(-1)!.end).toBeCloseTo(pcm.length / SR, 9);
    for (const s of r.segments) expect(s.end - s.start).toBeLessThanOrEqual(15);
    // cuts fall in the silent gaps, not inside a clip
    for (const s of r.segments.slice(0, -1)) {
      expect(bounds.some((b) => s.end >= b - 1e-9 && s.end <= b + 1.5)).toBe(true);
    }
    for (const s of r.segments) if (s.text) expect(FIXTURE_SENTENCES).toContain(s.text);
    expect(r.text).toBe(r.segments.map((s) => s.text).filter(Boolean).join(' '));
    expect(r.languages).toEqual(['English']);
  });

  it('streams deltas across chunks that add up to the text', async () => {
    const { pcm } = recording(['far_field', 'dropout']);
    const deltas: string[] = [];
    const r = await transcribe(engine, pcm, { ...defaults, chunkSeconds: 8, onDelta: (d) => deltas.push(d) });
    expect(r.segments.length).toBeGreaterThanOrEqual(2);
    expect(deltas.join('')).toBe(r.text);
  });

  it('gives each chunk a budget proportional to its duration', async () => {
    const never = await AsrEngine.load({ modelDir: fixtureModel('never-stops'), device: 'cpu' });
    try {
      const pcm = clip('noise');
      const seconds = pcm.length / SR;
      const r = await transcribe(never, pcm, { ...defaults, tokensPerSecond: 3, tokenBudgetBase: 4 });
      expect(r.truncated).toBe(true);
      expect(r.segments[0]!.truncated).toBe(true);
      expect(r.usage.generatedTokens).toBe(4 + Math.ceil(3 * seconds));
    } finally {
      await never.release();
    }
  });

  it('runs no chunk when cancelled before it starts', async () => {
    const { pcm } = recording(['noise', 'echo', 'mixed']);
    const r = await transcribe(engine, pcm, { ...defaults, chunkSeconds: 10, shouldStop: () => true });
    expect(r).toMatchObject({ cancelled: true, segments: [], text: '' });
    expect(r.usage).toEqual({ promptTokens: 0, audioTokens: 0, generatedTokens: 0 });
  });

  it('stops inside the chunk it was cancelled in and runs no later chunk', async () => {
    const { pcm } = recording(['noise', 'echo', 'mixed']);
    let checks = 0;
    // the first check is before chunk 1, the second before its prefill; later ones are between its decode steps
    const r = await transcribe(engine, pcm, { ...defaults, chunkSeconds: 10, shouldStop: () => ++checks > 4 });
    expect(r.cancelled).toBe(true);
    expect(r.segments).toHaveLength(1);
    expect(r.usage.generatedTokens).toBe(3);
  });
});

describe('transcribe with voice activity detection', () => {
  let engine: AsrEngine;
  const vad: TranscribeOptions = { ...defaults, vad: { maxSegmentSeconds: 15 } };
  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cpu' });
  });
  afterAll(() => engine.release());

  it('gives silence and noise an empty transcript without running the model', async () => {
    const noise = new Float32Array(5 * SR).map(symmetric(3)).map((x) => x * 0.3);
    for (const pcm of [new Float32Array(5 * SR), noise]) {
      const r = await transcribe(engine, pcm, vad);
      expect(r).toMatchObject({ text: '', languages: [], segments: [], truncated: false });
      expect(r.usage.generatedTokens).toBe(0);
      expect(r.duration).toBe(5);
    }
    // the reference pipeline, without voice activity detection, invents a sentence for the same noise
    expect(FIXTURE_SENTENCES).toContain((await transcribe(engine, noise, defaults)).text);
  });

  it('says cancelled when stopped while finding speech, and runs nothing', async () => {
    const r = await transcribe(engine, new Float32Array(60 * SR), { ...vad, shouldStop: () => true });
    expect(r).toMatchObject({ cancelled: true, segments: [], text: '' });
    expect((await transcribe(engine, new Float32Array(5 * SR), vad)).cancelled).toBe(false);
  });

  it('times segments in the original time line when the audio starts with silence', async () => {
    const speech = clip('far_field');
    const pcm = new Float32Array(3 * SR + speech.length);
    pcm.set(speech, 3 * SR);
    const r = await transcribe(engine, pcm, vad);
    expect(r.segments.length).toBeGreaterThanOrEqual(1);
    expect(r.segments[0]!.start).toBeGreaterThan(2.5);
    expect(r.segments[0]!.start).toBeLessThan(3.5);
    expect(r.segments.at(-1)!.end).toBeLessThanOrEqual(pcm.length / SR);
    for (const s of r.segments) expect(FIXTURE_SENTENCES).toContain(s.text);
  });

  it("finds an upload's speech between the running batch's decode steps, so it joins that batch", async () => {
    // Each VAD frame is a model run that yields to the event loop: interleaved with the steps, a 5 s clip's
    // ~160 frames would take ~160 steps, and the second upload would start decoding only after the first ended.
    const talker = await AsrEngine.load({ modelDir: fixtureModel('never-stops'), device: 'cpu' });
    try {
      let decoding!: () => void;
      const firstDecodes = new Promise<void>((resolve) => (decoding = resolve));
      // ~110 tokens, to its budget
      const first = transcribe(talker, clip('far_field'), { ...vad, tokenBudgetBase: 60, onDelta: () => decoding() });
      await firstDecodes;
      const second = await transcribe(talker, clip('recording'), vad);
      const firstDone = await first;
      expect(firstDone.truncated).toBe(true);
      expect(second.segments).toHaveLength(1);
      // the second decoded beside the first for most of its ~70 steps (before: none)
      expect(second.timings.stepRows - second.timings.steps).toBeGreaterThan(40);
    } finally {
      await talker.release();
    }
  });

  it('cuts long speech into segments of at most the maximum, at pauses', async () => {
    const { pcm, bounds } = recording(['noise', 'echo', 'mixed', 'obstructed', 'distortion', 'recording']);
    const r = await transcribe(engine, pcm, vad);
    expect(r.segments.length).toBeGreaterThanOrEqual(3);
    for (const s of r.segments) {
      expect(s.end - s.start).toBeLessThanOrEqual(15 + 1e-9);
      expect(FIXTURE_SENTENCES).toContain(s.text);
    }
    for (let i = 1; i < r.segments.length; i++) expect(r.segments[i]!.start).toBeGreaterThanOrEqual(r.segments[i - 1]!.end);
    // every cut between segments lies in the silence between two clips, or in a clip's last second, after its last
    // word (obstructed.wav ends in 1.3 s of near silence, echo.wav in 0.7 s of reverberation), never inside speech
    for (const s of r.segments.slice(0, -1)) expect(bounds.some((b) => s.end >= b - 1 && s.end <= b + 1.7), `cut at ${s.end}`).toBe(true);
  });
});

describe('helpers', () => {
  it('tokenBudget', () => {
    expect(tokenBudget(30, { tokensPerSecond: 8, tokenBudgetBase: 32 })).toBe(272);
    expect(tokenBudget(0.1, { tokensPerSecond: 8, tokenBudgetBase: 32 })).toBe(33);
  });

  it('joins chunk texts like the reference for CJK, with a space between words elsewhere', () => {
    expect(joinSeparator('Hello.', 'World')).toBe(' ');
    expect(joinSeparator('你好。', '世界')).toBe('');
    expect(joinSeparator('Hello ', 'World')).toBe('');
    expect(joinSeparator('', 'World')).toBe('');
    expect(joinSeparator('日本', 'Tokyo')).toBe('');
  });
});
