import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decodeWavToPcm, SAMPLE_RATE as SR } from '../../src/audio/pcm.js';
import { detectSpeech, planSegments, type PlannedSegment, type SpeechRegion } from '../../src/audio/vad.js';
import { mulberry32 } from '../../tools/random.js';
import { sharedPath } from '../support/shared.js';

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

function silence(seconds: number): Float32Array {
  return new Float32Array(Math.round(seconds * SR));
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

function rms(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

function scaleTo(x: Float32Array, target: number): Float32Array {
  const g = target / rms(x);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * g;
  return x;
}

type Colour = 'white' | 'pink' | 'brown';
/** Stationary Gaussian noise at the given RMS: white, pink (Kellet's filter, -3 dB/octave) or brown (leaky integrator, -6 dB/octave). */
function noise(colour: Colour, seconds: number, level: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const x = new Float32Array(Math.round(seconds * SR));
  const b = new Float64Array(7);
  for (let i = 0; i < x.length; i++) {
    const w = gaussian(next);
    if (colour === 'white') {
      x[i] = w;
    } else if (colour === 'brown') {
      b[0] = 0.998 * b[0]! + w;
      x[i] = b[0];
    } else {
      b[0] = 0.99886 * b[0]! + w * 0.0555179;
      b[1] = 0.99332 * b[1]! + w * 0.0750759;
      b[2] = 0.969 * b[2]! + w * 0.153852;
      b[3] = 0.8665 * b[3]! + w * 0.3104856;
      b[4] = 0.55 * b[4]! + w * 0.5329522;
      b[5] = -0.7616 * b[5]! - w * 0.016898;
      x[i] = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6]! + w * 0.5362;
      b[6] = w * 0.115926;
    }
  }
  return scaleTo(x, level);
}

/** Sum of sines at `freqs`, the h-th at amplitude / h. */
function tone(seconds: number, freqs: number[], amplitude: number): Float32Array {
  const x = new Float32Array(Math.round(seconds * SR));
  for (let i = 0; i < x.length; i++) {
    let v = 0;
    freqs.forEach((f, h) => (v += (amplitude / (h + 1)) * Math.sin((2 * Math.PI * f * i) / SR)));
    x[i] = v;
  }
  return x;
}

function total(regions: SpeechRegion[]): number {
  return regions.reduce((s, r) => s + r.end - r.start, 0);
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

describe('detectSpeech: no speech, no regions', () => {
  it('finds nothing in empty input and digital silence', () => {
    expect(detectSpeech(new Float32Array(0))).toEqual([]);
    expect(detectSpeech(new Float32Array(100))).toEqual([]);
    expect(detectSpeech(silence(30))).toEqual([]);
  });

  it('finds nothing in very quiet dither', () => {
    const next = mulberry32(3);
    // TPDF dither of +-1 LSB at 16 bits, then much louder but still quiet white noise.
    const dither = Float32Array.from({ length: 20 * SR }, () => (next() - next()) / 32768);
    expect(detectSpeech(dither)).toEqual([]);
    expect(detectSpeech(noise('white', 20, 1e-4, 4))).toEqual([]);
  });

  for (const colour of ['white', 'pink', 'brown'] as const) {
    it(`finds nothing in stationary ${colour} noise at any level`, () => {
      for (const [i, level] of [0.01, 0.05, 0.2, 0.5].entries()) {
        expect(detectSpeech(noise(colour, 30, level, 10 + i)), `${colour} at RMS ${level}`).toEqual([]);
      }
    });
  }

  it('finds nothing in hum and steady tones', () => {
    expect(detectSpeech(tone(20, [50, 100, 150, 200, 250], 0.3))).toEqual([]);
    expect(detectSpeech(tone(20, [60, 120, 180], 0.05))).toEqual([]);
    expect(detectSpeech(tone(20, [440], 0.3))).toEqual([]);
    // A bin-centred tone leaves every other bin empty: its shape alone must not read as voicing.
    expect(detectSpeech(tone(20, [1000], 0.9))).toEqual([]);
    // A steady buzz has the harmonics of a voice but none of its changes.
    expect(detectSpeech(tone(20, [150, 300, 450, 600, 750, 900, 1050], 0.2))).toEqual([]);
  });

  it('finds nothing in noise that starts after silence or after quieter noise', () => {
    expect(detectSpeech(concat(silence(5), noise('brown', 20, 0.2, 21)))).toEqual([]);
    expect(detectSpeech(concat(silence(5), noise('pink', 20, 0.2, 22)))).toEqual([]);
    expect(detectSpeech(concat(noise('pink', 5, 0.001, 23), noise('brown', 20, 0.3, 24)))).toEqual([]);
    expect(detectSpeech(concat(noise('white', 5, 0.003, 25), noise('pink', 20, 0.3, 26)))).toEqual([]);
  });
});

describe('detectSpeech on real noisy speech (voices-in-the-wild)', () => {
  // Coverage measured when the thresholds were chosen: noise 100%, far_field 88%, obstructed 83%,
  // distortion 92%, recording 74% (speech at ~0 dB SNR), echo 83%, dropout 89%, mixed 88%.
  it.each(CLIPS)('%s: regions cover the spoken part', (name) => {
    const pcm = clip(name);
    const duration = pcm.length / SR;
    const regions = detectSpeech(pcm);
    expectOrdered(regions, duration);
    expect(total(regions) / duration).toBeGreaterThanOrEqual(0.6);
    // recording.wav's noise is as loud as its speech, so its energy is spread like its duration.
    expect(energyInside(pcm, regions)).toBeGreaterThanOrEqual(name === 'recording' ? 0.7 : 0.85);
  });

  it('leaves out the 1.3 s of near silence before obstructed.wav speaks', () => {
    const regions = detectSpeech(clip('obstructed'));
    expect(regions[0]!.start).toBeGreaterThan(1);
    expect(regions[0]!.start).toBeLessThan(1.5);
  });

  it('places speech after 5 s of silence at 5 s, in the input time line', () => {
    // far_field.wav speaks from its first frame.
    const late = detectSpeech(concat(silence(5), clip('far_field')));
    expect(Math.abs(late[0]!.start - 5)).toBeLessThanOrEqual(0.25);
    // mixed.wav has a quiet lead-in: the regions move by exactly the silence.
    const alone = detectSpeech(clip('mixed'));
    const shifted = detectSpeech(concat(silence(5), clip('mixed')));
    expect(shifted).toHaveLength(alone.length);
    shifted.forEach((r, i) => {
      expect(r.start - alone[i]!.start).toBeCloseTo(5, 1);
      expect(r.end - alone[i]!.end).toBeCloseTo(5, 1);
    });
  });

  it('splits two utterances 2 s apart into two regions with the pause between them', () => {
    const first = clip('mixed');
    const gapStart = first.length / SR;
    const regions = detectSpeech(concat(first, silence(2), clip('far_field')));
    expect(regions).toHaveLength(2);
    expect(regions[0]!.end).toBeLessThanOrEqual(gapStart + 0.4);
    expect(regions[1]!.start).toBeGreaterThanOrEqual(gapStart + 2 - 0.4);
    expect(regions[1]!.start - regions[0]!.end).toBeGreaterThan(1);
    // The same pause is bridged when the minimum silence is longer than it.
    expect(detectSpeech(concat(first, silence(2), clip('far_field')), { minSilenceSeconds: 3 })).toHaveLength(1);
  });

  it.each(['far_field', 'distortion', 'dropout', 'mixed'] as const)('still finds %s under white noise at 10 dB SNR', (name) => {
    const pcm = clip(name);
    const noisy = noise('white', pcm.length / SR, rms(pcm) / Math.sqrt(10), 99);
    for (let i = 0; i < noisy.length; i++) noisy[i] = noisy[i]! + pcm[i]!;
    const clean = detectSpeech(pcm);
    const regions = detectSpeech(noisy);
    expect(total(regions) / (pcm.length / SR)).toBeGreaterThanOrEqual(0.6);
    expect(Math.abs(regions[0]!.start - clean[0]!.start)).toBeLessThanOrEqual(0.5);
  });

  it('uses its options', () => {
    const pcm = clip('mixed');
    const plain = detectSpeech(pcm);
    const unpadded = detectSpeech(pcm, { paddingSeconds: 0 });
    expect(unpadded[0]!.start).toBeCloseTo(plain[0]!.start + 0.15, 5);
    expect(detectSpeech(pcm, { voicingThreshold: 0.99 })).toEqual([]);
    expect(detectSpeech(pcm, { minVoicedSeconds: 10 })).toEqual([]);
    expect(() => detectSpeech(pcm, { hopSeconds: 0.0101 })).toThrow(RangeError);
    expect(() => detectSpeech(pcm, { windowSeconds: 0.0535 })).toThrow(RangeError); // 428 points: 107 is prime
    expect(() => detectSpeech(pcm, { voicingThreshold: Number.NaN })).toThrow(RangeError);
    expect(() => detectSpeech(pcm, { minF0: 20 })).toThrow(RangeError);
  });

  it('processes 10 minutes of audio at well under 250 ms per minute', () => {
    const minute = concat(...CLIPS.map(clip), ...CLIPS.map(clip));
    const parts: Float32Array[] = [];
    for (let s = 0; s < 600; s += minute.length / SR) parts.push(minute);
    const long = concat(...parts);
    const t0 = performance.now();
    const regions = detectSpeech(long);
    const segments = planSegments(long, regions, { maxSeconds: 15 });
    const ms = performance.now() - t0;
    // ~25 ms per minute here; the bound leaves room for a loaded machine.
    expect(ms / (long.length / SR / 60)).toBeLessThan(250);
    expect(segments.length).toBeGreaterThan(40);
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
  function speechStream(seconds: number, gap: number): { pcm: Float32Array; joins: [number, number][] } {
    const parts: Float32Array[] = [];
    const joins: [number, number][] = [];
    let t = 0;
    for (let i = 0; t < seconds; i++) {
      const pcm = clip(CLIPS[i % CLIPS.length]!);
      const regions = detectSpeech(pcm);
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

  it('splits a minute of continuous speech at local energy minima', () => {
    const { pcm } = speechStream(60, 0);
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

  it('splits speech with short pauses at the pauses, in the original time line', () => {
    const lead = 5;
    const stream = speechStream(60, 0.25);
    const pcm = concat(silence(lead), stream.pcm);
    const duration = pcm.length / SR;
    const regions = detectSpeech(pcm);
    const segments = planSegments(pcm, regions, { maxSeconds: 15 });
    expectOrdered(segments, duration);
    for (const s of segments) expect(s.end - s.start).toBeLessThanOrEqual(15);
    expect(Math.abs(segments[0]!.start - lead)).toBeLessThanOrEqual(0.25);
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
