import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm, SAMPLE_RATE as SR } from '../../src/audio/pcm.js';
import { SileroVad } from '../../src/audio/silero-vad.js';
import { DEFAULT_TURN_DETECTION } from '../../src/audio/turn-detector.js';
import { detectSpeech, planSegments, type PlannedSegment, type SpeechRegion } from '../../src/audio/vad.js';
import { mulberry32 } from '../../tools/random.js';
import { sharedPath } from '../support/shared.js';
import {
  concat, frameRecall, LOW_VOICE, music, noise, NOISE_KINDS, noisyCase, reverberate, rms, say, SENTENCES, silence,
  speechFrames, tone, totalSeconds as total, VOICE, type NoiseKind,
} from '../support/speech-mix.js';

const CLIPS = ['noise', 'far_field', 'obstructed', 'distortion', 'recording', 'echo', 'dropout', 'mixed'] as const;
type ClipName = (typeof CLIPS)[number];

const clipCache = new Map<ClipName, Float32Array>();
/** A voices-in-the-wild clip (24 kHz 16-bit WAV) as 16 kHz model input. */
function clip(name: ClipName): Float32Array {
  let pcm = clipCache.get(name);
  if (!pcm) {
    pcm = decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
    clipCache.set(name, pcm);
  }
  return pcm;
}

function expectOrdered(segments: readonly SpeechRegion[], duration: number): void {
  segments.forEach((s, i) => {
    expect(s.start).toBeGreaterThanOrEqual(0);
    expect(s.end).toBeLessThanOrEqual(duration + 1e-9);
    expect(s.end).toBeGreaterThan(s.start);
    if (i > 0) expect(s.start).toBeGreaterThanOrEqual(segments[i - 1]!.end);
  });
}

/** Mean square of x over [t - half, t + half] seconds. */
function meanSquareAround(x: Float32Array, t: number, half = 0.05): number {
  const from = Math.max(0, Math.round((t - half) * SR));
  const to = Math.min(x.length, Math.round((t + half) * SR));
  let s = 0;
  for (let i = from; i < to; i++) s += x[i]! * x[i]!;
  return s / Math.max(1, to - from);
}

/** Fraction of the signal's energy that lies inside the regions. */
function energyInside(x: Float32Array, regions: SpeechRegion[]): number {
  let all = 0;
  for (const v of x) all += v * v;
  let inside = 0;
  for (const r of regions) {
    for (let i = Math.round(r.start * SR); i < Math.min(x.length, Math.round(r.end * SR)); i++) inside += x[i]! * x[i]!;
  }
  return inside / all;
}

let vad: SileroVad;
beforeAll(async () => {
  vad = await SileroVad.load();
});
afterAll(() => vad.release());
const detect = (pcm: Float32Array) => detectSpeech(pcm, vad);

describe('detectSpeech: no speech, no regions', () => {
  it('finds nothing in empty input and digital silence', async () => {
    expect(await detect(new Float32Array(0))).toEqual([]);
    expect(await detect(new Float32Array(100))).toEqual([]);
    expect(await detect(silence(10))).toEqual([]);
  });

  it('finds nothing in very quiet dither', async () => {
    const next = mulberry32(3);
    // TPDF dither of +-1 LSB at 16 bits, then much louder but still quiet white noise.
    const dither = Float32Array.from({ length: 5 * SR }, () => (next() - next()) / 32768);
    expect(await detect(dither)).toEqual([]);
    expect(await detect(noise('white', 5, 1e-4, 4))).toEqual([]);
  });

  for (const colour of ['white', 'pink', 'brown'] as const) {
    it(`finds nothing in stationary ${colour} noise at any level`, async () => {
      for (const [i, level] of [0.01, 0.05, 0.2, 0.5].entries()) {
        expect(await detect(noise(colour, 4, level, 10 + i)), `${colour} at RMS ${level}`).toEqual([]);
      }
    });
  }

  it('finds nothing in hum, steady tones or music', async () => {
    expect(await detect(tone(4, [50, 100, 150, 200, 250], 0.3))).toEqual([]);
    expect(await detect(tone(4, [60, 120, 180], 0.05))).toEqual([]);
    expect(await detect(tone(4, [440], 0.3))).toEqual([]);
    expect(await detect(tone(4, [1000], 0.9))).toEqual([]);
    // A steady buzz has the harmonics of a voice but none of its changes.
    expect(await detect(tone(4, [150, 300, 450, 600, 750, 900, 1050], 0.2))).toEqual([]);
    // Chords of plucked harmonic notes: the hand-written detector marked all of it as speech.
    for (const [i, level] of [0.03, 0.1, 0.3].entries()) expect(await detect(music(5, level, 30 + i)), `music at RMS ${level}`).toEqual([]);
  });

  it('finds nothing in noise that starts after silence or after quieter noise', async () => {
    expect(await detect(concat(silence(2), noise('brown', 4, 0.2, 21)))).toEqual([]);
    expect(await detect(concat(silence(2), noise('pink', 4, 0.2, 22)))).toEqual([]);
    expect(await detect(concat(noise('pink', 2, 0.001, 23), noise('brown', 4, 0.3, 24)))).toEqual([]);
    expect(await detect(concat(noise('white', 2, 0.003, 25), noise('pink', 4, 0.3, 26)))).toEqual([]);
  });
});

/**
 * Least fraction of the clean speech's frames kept, per noise kind, at 0 and -5 dB, for both voices: measured
 * (bench/vad.ts, where the hand-written detector's figures are too) and set a little under. Silero's own
 * reference on such mixes is 97-98 % at -5 dB in pink noise, reverberation or clipping. Music at -5 dB drowns
 * the voice for Silero too (measured 68-82 %): it is not counted as speech, which is the point of it.
 */
const MIN_RECALL: Record<NoiseKind, [number, number]> = {
  white: [0.97, 0.97],
  pink: [0.97, 0.97],
  brown: [0.97, 0.97],
  babble: [0.97, 0.97],
  music: [0.95, 0.6],
  reverb: [0.97, 0.93],
  clipped: [0.97, 0.97],
};

describe('detectSpeech keeps speech in noise (espeak-ng speech, SNR = active speech level over noise)', () => {
  for (const [name, voice] of [
    ['a plain voice', VOICE],
    ['a low voice (~84 Hz)', LOW_VOICE],
  ] as const) {
    let speech: Float32Array;
    beforeAll(() => {
      speech = concat(say(SENTENCES[0]!, voice), silence(0.4), say(SENTENCES[1]!, voice));
    });
    it.each(NOISE_KINDS)(`${name} under %s at 0 and -5 dB`, async (kind) => {
      for (const [i, snr] of [0, -5].entries()) {
        const c = noisyCase(speech, kind, snr);
        const recall = frameRecall(c.truth, await detect(c.pcm));
        expect(recall, `${kind} at ${snr} dB`).toBeGreaterThanOrEqual(MIN_RECALL[kind][i]!);
      }
    });
  }

  it('ends a region where the speech ends, not where its reverberation does', async () => {
    const dry = concat(silence(0.5), say(SENTENCES[0]!, LOW_VOICE), silence(3));
    const lastSpeech = ((speechFrames(dry).lastIndexOf(1) + 1) * 512) / SR;
    const regions = await detect(reverberate(dry, 1, 1, 3).subarray(0, dry.length));
    const end = Math.max(...regions.map((r) => r.end));
    // the region ends at most the end padding (300 ms) plus 200 ms after the dry speech, in a 1 s RT60 room
    expect(end - lastSpeech).toBeLessThanOrEqual(DEFAULT_TURN_DETECTION.prefixPaddingMs / 1000 + 0.2);
  });
});

describe('detectSpeech on real noisy speech (voices-in-the-wild)', () => {
  it.each(CLIPS)('%s: regions cover the spoken part', async (name) => {
    const pcm = clip(name);
    const duration = pcm.length / SR;
    const regions = await detect(pcm);
    expectOrdered(regions, duration);
    // Measured: duration covered 75-98 %, energy 98-100 % (recording.wav: 84 %).
    expect(total(regions) / duration).toBeGreaterThanOrEqual(0.7);
    // recording.wav's noise is as loud as its speech, so its energy is spread like its duration.
    expect(energyInside(pcm, regions)).toBeGreaterThanOrEqual(name === 'recording' ? 0.8 : 0.95);
  });

  it('leaves out the 1.3 s of near silence before obstructed.wav speaks', async () => {
    const regions = await detect(clip('obstructed'));
    expect(regions[0]!.start).toBeGreaterThan(0.7);
    expect(regions[0]!.start).toBeLessThan(1.3);
  });

  it('places speech after 5 s of silence at 5 s, in the input time line', async () => {
    const late = await detect(concat(silence(5), clip('far_field')));
    expect(Math.abs(late[0]!.start - 5)).toBeLessThanOrEqual(0.3);
    const alone = await detect(clip('mixed'));
    const shifted = await detect(concat(silence(5), clip('mixed')));
    expect(shifted).toHaveLength(alone.length);
    shifted.forEach((r, i) => {
      expect(r.start - alone[i]!.start).toBeCloseTo(5, 1);
      expect(r.end - alone[i]!.end).toBeCloseTo(5, 1);
    });
  });

  it('splits two utterances 2 s apart into two regions with the pause between them', async () => {
    const first = clip('mixed');
    const gapStart = first.length / SR;
    const pcm = concat(first, silence(2), clip('far_field'));
    const regions = await detect(pcm);
    expect(regions).toHaveLength(2);
    expect(regions[0]!.end).toBeLessThanOrEqual(gapStart + 0.4);
    expect(regions[1]!.start).toBeGreaterThanOrEqual(gapStart + 2 - 0.4);
    expect(regions[1]!.start - regions[0]!.end).toBeGreaterThan(1);
    // The same pause is bridged when a turn needs a longer silence to end.
    expect(await detectSpeech(pcm, vad, { ...DEFAULT_TURN_DETECTION, silenceDurationMs: 3000 })).toHaveLength(1);
  });

  it.each(['far_field', 'distortion', 'dropout', 'mixed'] as const)('still finds %s under white noise at 10 dB SNR', async (name) => {
    const pcm = clip(name);
    const noisy = noise('white', pcm.length / SR, rms(pcm) / Math.sqrt(10), 99);
    for (let i = 0; i < noisy.length; i++) noisy[i] = noisy[i]! + pcm[i]!;
    const clean = await detect(pcm);
    const regions = await detect(noisy);
    expect(total(regions) / (pcm.length / SR)).toBeGreaterThanOrEqual(0.6);
    expect(Math.abs(regions[0]!.start - clean[0]!.start)).toBeLessThanOrEqual(0.5);
  });

  it('costs well under a second of CPU per minute of audio', async () => {
    const minute = concat(...CLIPS.map(clip), ...CLIPS.map(clip)).subarray(0, 60 * SR);
    const before = process.cpuUsage();
    const regions = await detect(minute);
    const cpu = process.cpuUsage(before);
    // ~300 ms here (Silero ~0.15 ms per 32 ms frame, one thread); the bound leaves room for a loaded machine.
    expect((cpu.user + cpu.system) / 1000).toBeLessThan(1000);
    expect(regions.length).toBeGreaterThan(5);
  });

  it('stops when asked, every 5 s of audio, with the regions found so far', async () => {
    const minute = concat(...CLIPS.map(clip), ...CLIPS.map(clip)).subarray(0, 60 * SR);
    const all = await detect(minute);
    let asked = 0;
    const first = await detectSpeech(minute, vad, undefined, () => ++asked > 6);
    expect(asked).toBe(7);
    expect(first.length).toBeGreaterThan(1);
    expect(first.length).toBeLessThan(all.length);
    expect(first[first.length - 1]!.end).toBeLessThanOrEqual(30);
    expect(first.slice(0, -1)).toEqual(all.slice(0, first.length - 1));
    expect(await detectSpeech(minute, vad, undefined, () => true)).toEqual([]);
  });

  it('uses its options', async () => {
    const pcm = clip('mixed');
    const plain = await detect(pcm);
    const unpadded = await detectSpeech(pcm, vad, { ...DEFAULT_TURN_DETECTION, prefixPaddingMs: 0 });
    expect(unpadded[0]!.start - plain[0]!.start).toBeCloseTo(Math.min(0.3, unpadded[0]!.start), 5);
    await expect(detectSpeech(pcm, vad, { ...DEFAULT_TURN_DETECTION, threshold: Number.NaN })).rejects.toThrow(RangeError);
  });
});

describe('planSegments', () => {
  /** Loud white noise standing in for continuous speech, with near-silent dips [start, length] in seconds. */
  function loudWithDips(seconds: number, dips: [number, number][]): Float32Array {
    const x = noise('white', seconds, 0.3, 7);
    for (const [at, length] of dips) {
      for (let i = Math.round(at * SR); i < Math.round((at + length) * SR); i++) x[i] = x[i]! * 1e-3;
    }
    return x;
  }

  function cutsOf(segments: PlannedSegment[]): number[] {
    return segments.slice(1).map((s, i) => (s.start + segments[i]!.end) / 2);
  }

  it('returns nothing for no regions', () => {
    expect(planSegments(silence(10), [], { maxSeconds: 15 })).toEqual([]);
  });

  it('cuts a long region in its quiet dips, not on a fixed grid', () => {
    const x = loudWithDips(40, [
      [8.85, 0.3],
      [21.85, 0.3],
      [32.85, 0.3],
    ]);
    const segments = planSegments(x, [{ start: 0, end: 40 }], { maxSeconds: 15, paddingSeconds: 0 });
    const cuts = cutsOf(segments);
    expect(cuts).toHaveLength(3);
    [9, 22, 33].forEach((dip, i) => expect(Math.abs(cuts[i]! - dip)).toBeLessThanOrEqual(0.1));
    // Pieces touch at the cuts: the whole region is transcribed.
    expect(segments[0]!.start).toBe(0);
    expect(segments[segments.length - 1]!.end).toBe(40);
    segments.forEach((s, i) => i > 0 && expect(s.start).toBe(segments[i - 1]!.end));
    for (const s of segments) expect(s.end - s.start).toBeLessThanOrEqual(15);
  });

  it('prefers the longer of two silent pauses, and cuts near its middle', () => {
    const x = loudWithDips(20, [
      [7, 0.12],
      [10.7, 0.6],
    ]);
    const segments = planSegments(x, [{ start: 0, end: 20 }], { maxSeconds: 15, paddingSeconds: 0 });
    expect(segments).toHaveLength(2);
    expect(Math.abs(cutsOf(segments)[0]! - 11)).toBeLessThanOrEqual(0.1);
  });

  it('merges regions across short gaps when the result fits, and pads without overlap', () => {
    const x = noise('white', 21, 0.3, 8);
    const regions = [
      { start: 1, end: 3 },
      { start: 3.5, end: 6 },
      { start: 6.4, end: 20 },
    ];
    const segments = planSegments(x, regions, { maxSeconds: 15 });
    expect(segments).toHaveLength(2);
    expect(segments[0]!.start).toBeCloseTo(0.9, 9);
    expect(segments[0]!.end).toBeCloseTo(6.1, 9);
    expect(segments[1]!.start).toBeCloseTo(6.3, 9);
    expect(segments[1]!.end).toBeCloseTo(20.1, 9);
    expect(planSegments(x, regions, { maxSeconds: 15, mergeGapSeconds: 0 })).toHaveLength(3);
    // Close regions whose union would pass the limit stay apart: the pause between them is the cut.
    const apart = planSegments(x, [{ start: 0.5, end: 8 }, { start: 8.5, end: 16 }], { maxSeconds: 15 });
    expect(apart.map((s) => [s.start, s.end])).toEqual([
      [0.4, 8.1],
      [8.4, 16.1],
    ]);
  });

  it('keeps padding inside the audio and inside the limit', () => {
    const x = noise('white', 30, 0.3, 9);
    const edges = planSegments(x, [{ start: 0, end: 2 }, { start: 29, end: 30 }], { maxSeconds: 15, paddingSeconds: 0.5 });
    expect(edges[0]!.start).toBe(0);
    expect(edges[edges.length - 1]!.end).toBe(30);
    const [full] = planSegments(x, [{ start: 5, end: 19.95 }], { maxSeconds: 15, paddingSeconds: 0.5 });
    expect(full!.end - full!.start).toBeLessThanOrEqual(15);
    expect(full!.start).toBeLessThanOrEqual(5);
    expect(full!.end).toBeGreaterThanOrEqual(19.95);
  });

  it('sorts, clips and merges overlapping input regions', () => {
    const x = noise('white', 10, 0.3, 10);
    const regions = [
      { start: 5, end: 7 },
      { start: -1, end: 2 },
      { start: 6, end: 8 },
      { start: 30, end: 40 },
    ];
    expect(planSegments(x, regions, { maxSeconds: 15, paddingSeconds: 0 })).toEqual([
      { start: 0, end: 2 },
      { start: 5, end: 8 },
    ]);
    expect(() => planSegments(x, regions, { maxSeconds: 0 })).toThrow(RangeError);
    expect(() => planSegments(x, regions, { maxSeconds: Number.NaN })).toThrow(RangeError);
    expect(() => planSegments(x, regions, { maxSeconds: 15, paddingSeconds: -1 })).toThrow(RangeError);
  });

  /** The clips' spoken parts back to back, `gap` seconds of silence between them, until `seconds`. */
  async function speechStream(seconds: number, gap: number): Promise<{ pcm: Float32Array; joins: [number, number][] }> {
    const parts: Float32Array[] = [];
    const joins: [number, number][] = [];
    let t = 0;
    for (let i = 0; t < seconds; i++) {
      const pcm = clip(CLIPS[i % CLIPS.length]!);
      // The speech alone, unpadded, so that clips 0.25 s apart run on as one turn.
      const regions = await detectSpeech(pcm, vad, { ...DEFAULT_TURN_DETECTION, prefixPaddingMs: 0 });
      const spoken = pcm.subarray(Math.round(regions[0]!.start * SR), Math.round(regions[regions.length - 1]!.end * SR));
      if (parts.length) {
        joins.push([t, t + gap]);
        parts.push(silence(gap));
        t += gap;
      }
      parts.push(spoken);
      t += spoken.length / SR;
    }
    return { pcm: concat(...parts), joins };
  }

  it('splits a minute of continuous speech at local energy minima', async () => {
    const { pcm } = await speechStream(60, 0);
    const duration = pcm.length / SR;
    const segments = planSegments(pcm, [{ start: 0, end: duration }], { maxSeconds: 15 });
    expectOrdered(segments, duration);
    for (const s of segments) expect(s.end - s.start).toBeLessThanOrEqual(15);
    const cuts = cutsOf(segments);
    expect(cuts.length).toBeGreaterThanOrEqual(Math.ceil(duration / 15) - 1);
    // Each cut sits in a pause: within 3 dB of the quietest 400 ms within 2 s of it, and at least
    // 10 dB under the 4 s around it (a cut on a fixed grid lands in speech, near 0 dB).
    for (const c of cuts) {
      let quietest = Infinity;
      for (let t = c - 2; t <= c + 2; t += 0.01) quietest = Math.min(quietest, meanSquareAround(pcm, t, 0.2));
      expect(meanSquareAround(pcm, c, 0.2)).toBeLessThanOrEqual(2 * quietest);
      expect(meanSquareAround(pcm, c)).toBeLessThan(0.1 * meanSquareAround(pcm, c, 2));
    }
  });

  it('splits speech with short pauses at the pauses, in the original time line', async () => {
    const lead = 5;
    const stream = await speechStream(60, 0.25);
    const pcm = concat(silence(lead), stream.pcm);
    const duration = pcm.length / SR;
    const regions = await detect(pcm);
    const segments = planSegments(pcm, regions, { maxSeconds: 15 });
    expectOrdered(segments, duration);
    for (const s of segments) expect(s.end - s.start).toBeLessThanOrEqual(15);
    // The first segment opens at the speech, less the turn's 300 ms prefix and the plan's 100 ms padding.
    expect(segments[0]!.start).toBeGreaterThanOrEqual(lead - 0.45);
    expect(segments[0]!.start).toBeLessThanOrEqual(lead);
    // Every region is transcribed, whole.
    for (const r of regions) {
      const covered = segments.reduce((sum, s) => sum + Math.max(0, Math.min(s.end, r.end) - Math.max(s.start, r.start)), 0);
      expect(covered).toBeCloseTo(r.end - r.start, 6);
    }
    // Every boundary between segments lies in a pause: between two regions, or, where speech runs
    // on past the limit, in one of the short silences between clips.
    const joins = stream.joins.map(([a, b]) => [a + lead, b + lead] as const);
    expect(segments.length).toBeGreaterThanOrEqual(4);
    let insideSpeech = 0;
    segments.slice(1).forEach((s, i) => {
      const mid = (segments[i]!.end + s.start) / 2;
      if (!regions.some((r) => r.start < mid && r.end > mid)) return;
      insideSpeech++;
      expect(
        joins.some(([a, b]) => mid > a && mid < b),
        `cut at ${mid.toFixed(2)}`,
      ).toBe(true);
    });
    expect(insideSpeech).toBeGreaterThanOrEqual(1);
  });
});
