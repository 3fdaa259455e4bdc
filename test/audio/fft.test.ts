import { describe, expect, it } from 'vitest';
import { ComplexFft, RealFft } from '../../src/audio/fft.js';
import { symmetric as rng } from '../../tools/random.js';


/** Naive float64 DFT, X[k] = sum_n x[n] exp(-2 pi i n k / N), for bins 0..nOut-1. */
function naiveDft(re: Float64Array, im: Float64Array, nOut: number): { re: Float64Array; im: Float64Array } {
  const n = re.length;
  const outRe = new Float64Array(nOut);
  const outIm = new Float64Array(nOut);
  for (let k = 0; k < nOut; k++) {
    let sr = 0;
    let si = 0;
    for (let j = 0; j < n; j++) {
      // (j*k mod n) keeps the angle small, so the reference twiddles are accurate.
      const a = (-2 * Math.PI * ((j * k) % n)) / n;
      const c = Math.cos(a);
      const s = Math.sin(a);
      sr += re[j]! * c - im[j]! * s;
      si += re[j]! * s + im[j]! * c;
    }
    outRe[k] = sr;
    outIm[k] = si;
  }
  return { re: outRe, im: outIm };
}

/** Max |a - b| over complex bins divided by max |b|. */
function relError(aRe: Float64Array, aIm: Float64Array, bRe: Float64Array, bIm: Float64Array, nBins: number): number {
  let err = 0;
  let mag = 0;
  for (let k = 0; k < nBins; k++) {
    err = Math.max(err, Math.hypot(aRe[k]! - bRe[k]!, aIm[k]! - bIm[k]!));
    mag = Math.max(mag, Math.hypot(bRe[k]!, bIm[k]!));
  }
  return err / mag;
}

describe('RealFft', () => {
  it.each([400, 2, 6, 8, 16, 20, 30, 48, 60, 200, 1000])('matches a naive DFT for n = %i', (n) => {
    const next = rng(n);
    const x64 = Float64Array.from({ length: n }, next);
    for (const x of [x64, Float32Array.from(x64)]) {
      const fft = new RealFft(n);
      expect(fft.bins).toBe(n / 2 + 1);
      const re = new Float64Array(fft.bins);
      const im = new Float64Array(fft.bins);
      fft.forward(x, re, im);
      const ref = naiveDft(Float64Array.from(x), new Float64Array(n), n / 2 + 1);
      expect(relError(re, im, ref.re, ref.im, n / 2 + 1)).toBeLessThan(1e-9);
      // DC and Nyquist of a real signal are real.
      expect(im[0]).toBe(0);
      expect(im[n / 2]).toBe(0);
    }
  });

  it('powerSpectrum reads a windowed slice at an offset and equals |forward|^2', () => {
    const n = 400;
    const next = rng(7);
    const signal = Float32Array.from({ length: 1000 }, next);
    const window = Float64Array.from({ length: n }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n));
    const offset = 321;
    const fft = new RealFft(n);
    const power = new Float64Array(fft.bins);
    fft.powerSpectrum(signal, offset, window, power);

    const seg = Float64Array.from({ length: n }, (_, i) => signal[offset + i]! * window[i]!);
    const ref = naiveDft(seg, new Float64Array(n), fft.bins);
    let maxPow = 0;
    for (let k = 0; k < fft.bins; k++) maxPow = Math.max(maxPow, ref.re[k]! ** 2 + ref.im[k]! ** 2);
    for (let k = 0; k < fft.bins; k++) {
      const expected = ref.re[k]! ** 2 + ref.im[k]! ** 2;
      expect(Math.abs(power[k]! - expected)).toBeLessThan(1e-9 * maxPow);
    }

    // Without a window it is the plain power spectrum.
    fft.powerSpectrum(signal, 0, null, power);
    const plain = naiveDft(Float64Array.from(signal.subarray(0, n)), new Float64Array(n), fft.bins);
    for (let k = 0; k < fft.bins; k++) {
      const expected = plain.re[k]! ** 2 + plain.im[k]! ** 2;
      expect(Math.abs(power[k]! - expected)).toBeLessThan(1e-9 * Math.max(1, expected));
    }
  });

  it('is reusable: repeated calls give identical results', () => {
    const fft = new RealFft(400);
    const x = Float64Array.from({ length: 400 }, rng(3));
    const a = new Float64Array(201);
    const b = new Float64Array(201);
    fft.powerSpectrum(x, 0, null, a);
    fft.powerSpectrum(Float64Array.from({ length: 400 }, rng(4)), 0, null, b);
    fft.powerSpectrum(x, 0, null, b);
    expect(b).toEqual(a);
  });

  it('rejects sizes it cannot plan and short buffers', () => {
    expect(() => new RealFft(7)).toThrow(RangeError);
    expect(() => new RealFft(14)).toThrow(RangeError); // 7 is not a supported factor
    expect(() => new RealFft(0)).toThrow(RangeError);
    const fft = new RealFft(8);
    expect(() => fft.powerSpectrum(new Float64Array(8), 1, null, new Float64Array(5))).toThrow(RangeError);
    expect(() => fft.powerSpectrum(new Float64Array(8), 0, null, new Float64Array(4))).toThrow(RangeError);
  });
});

describe('ComplexFft', () => {
  it.each([1, 2, 3, 4, 5, 8, 9, 12, 15, 16, 25, 40, 64, 100, 200, 240, 243, 256, 375])(
    'matches a naive DFT for n = %i',
    (n) => {
      const next = rng(1000 + n);
      const re = Float64Array.from({ length: n }, next);
      const im = Float64Array.from({ length: n }, next);
      const ref = naiveDft(re, im, n);
      const fft = new ComplexFft(n);
      fft.forward(re, im);
      expect(relError(re, im, ref.re, ref.im, n)).toBeLessThan(1e-9);
    },
  );

  it('rejects sizes with prime factors above 5', () => {
    expect(() => new ComplexFft(7)).toThrow(RangeError);
    expect(() => new ComplexFft(22)).toThrow(RangeError);
    expect(() => new ComplexFft(2.5)).toThrow(RangeError);
  });
});
