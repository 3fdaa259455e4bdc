import { describe, expect, it } from 'vitest';
import { resample } from '../../src/audio/resample.js';

function tone(freq: number, rate: number, n: number, amplitude = 0.5): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => amplitude * Math.sin((2 * Math.PI * freq * i) / rate));
}

/** Largest deviation from the ideal 16 kHz tone, away from the edges (output and input both start at t = 0). */
function maxToneError(y: Float32Array, freq: number, rate: number, amplitude: number, margin = 1000): number {
  let worst = 0;
  for (let i = margin; i < y.length - margin; i++) {
    worst = Math.max(worst, Math.abs(y[i]! - amplitude * Math.sin((2 * Math.PI * freq * i) / rate)));
  }
  return worst;
}

/** Amplitude of a `freq` tone by projection over a whole number of periods in the interior. */
function toneAmplitude(y: Float32Array, freq: number, rate: number): number {
  const period = rate / freq;
  const n = Math.floor((y.length - 2000) / period) * period;
  let c = 0;
  let s = 0;
  for (let i = 1000; i < 1000 + n; i++) {
    const w = (2 * Math.PI * freq * i) / rate;
    c += y[i]! * Math.cos(w);
    s += y[i]! * Math.sin(w);
  }
  return (2 / n) * Math.hypot(c, s);
}

function interiorRms(y: Float32Array, margin = 1000): number {
  let e = 0;
  for (let i = margin; i < y.length - margin; i++) e += y[i]! * y[i]!;
  return Math.sqrt(e / (y.length - 2 * margin));
}

describe('resample', () => {
  it('keeps a 1 kHz tone when downsampling 44.1 kHz -> 16 kHz', () => {
    const y = resample(tone(1000, 44100, 44100), 44100, 16000);
    expect(Math.abs(toneAmplitude(y, 1000, 16000) / 0.5 - 1)).toBeLessThan(0.005);
    expect(maxToneError(y, 1000, 16000, 0.5)).toBeLessThan(1e-4);
  });

  it('removes a 12 kHz tone (above the 8 kHz output Nyquist) to below -60 dB', () => {
    const y = resample(tone(12000, 44100, 44100), 44100, 16000);
    const relative = interiorRms(y) / (0.5 / Math.SQRT2);
    expect(20 * Math.log10(relative)).toBeLessThan(-60);
  });

  it('keeps a 1 kHz tone when upsampling 8 kHz -> 16 kHz, without images', () => {
    const y = resample(tone(1000, 8000, 8000), 8000, 16000);
    expect(Math.abs(toneAmplitude(y, 1000, 16000) / 0.5 - 1)).toBeLessThan(0.005);
    // Compared with the ideal 16 kHz tone, any 7 kHz image would show up as error.
    expect(maxToneError(y, 1000, 16000, 0.5)).toBeLessThan(1e-4);
  });

  it('keeps a tone through a non-rational ratio (44101 Hz)', () => {
    const y = resample(tone(1000, 44101, 44101), 44101, 16000);
    expect(maxToneError(y, 1000, 16000, 0.5)).toBeLessThan(1e-4);
  });

  it('outputs Math.round(n * to / from) samples', () => {
    const cases: [from: number, to: number, n: number, expected: number][] = [
      [44100, 16000, 44100 * 3 + 7, 48003],
      [44101, 16000, 44101, 16000],
      [44101, 16000, 1000, 363],
      [384000, 16000, 384123, 16005],
      [1000, 16000, 1001, 16016],
      [8000, 16000, 12345, 24690],
      [11025, 16000, 11027, 16003],
      [22050, 16000, 999, 725],
      [24000, 16000, 208320, 138880],
      [48000, 16000, 0, 0],
      [48000, 16000, 1, 0],
    ];
    for (const [from, to, n, expected] of cases) {
      expect(resample(new Float32Array(n), from, to).length, `${from} -> ${to}, ${n} samples`).toBe(expected);
      expect(expected).toBe(Math.round((n * to) / from));
    }
  });

  it('has unit DC gain in the interior for up- and downsampling', () => {
    for (const from of [1000, 8000, 11025, 22050, 44100, 44101, 48000, 384000]) {
      const y = resample(new Float32Array(from * 2).fill(0.5), from, 16000);
      let worst = 0;
      for (let i = 500; i < y.length - 500; i++) worst = Math.max(worst, Math.abs(y[i]! - 0.5));
      expect(worst, `${from} Hz`).toBeLessThan(1e-4);
    }
  });

  it('treats samples outside the input as zeros', () => {
    // Padding by 441 inputs at 44.1 kHz shifts the output by exactly 160 samples at 16 kHz.
    const x = tone(440, 44100, 5000, 0.8);
    const padded = new Float32Array(441 + x.length + 441);
    padded.set(x, 441);
    const y = resample(x, 44100, 16000);
    const yp = resample(padded, 44100, 16000);
    for (let i = 0; i < y.length; i++) expect(Math.abs(y[i]! - yp[i + 160]!)).toBeLessThan(1e-6);
  });

  it('returns an equal copy at the same rate', () => {
    const x = tone(440, 16000, 100);
    const y = resample(x, 16000, 16000);
    expect(y).toEqual(x);
    expect(y).not.toBe(x);
  });

  it('rejects non-positive rates', () => {
    expect(() => resample(new Float32Array(4), 0, 16000)).toThrow(RangeError);
    expect(() => resample(new Float32Array(4), 16000, Number.NaN)).toThrow(RangeError);
  });

  it('resamples 60 s of 48 kHz audio quickly', () => {
    const x = tone(440, 48000, 48000 * 60);
    const start = performance.now();
    expect(resample(x, 48000, 16000).length).toBe(960000);
    // ~0.2 s measured on a 2-core machine; the bound only catches gross regressions.
    expect(performance.now() - start).toBeLessThan(3000);
  });
});
