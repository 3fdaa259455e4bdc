import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HOP_LENGTH, MIN_SAMPLES, N_MELS, logMel, melFilterBank } from '../../src/audio/logMel.js';
import { sharedPath } from '../support/shared.js';
import { symmetric as rng } from '../../tools/random.js';

/** Reads a float32 little-endian file into a Float32Array backed by its own, aligned buffer. */
function readF32(path: string): Float32Array {
  const buf = readFileSync(path);
  if (buf.byteLength % 4 !== 0) throw new Error(`${path}: ${buf.byteLength} bytes is not a whole number of float32`);
  const out = new Float32Array(buf.byteLength / 4);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

interface GoldenMeta {
  samples: number;
  mel_shape: [number, number];
  tolerance_abs: number;
}


function maxAbsDiff(a: Float32Array, b: Float32Array): { diff: number; index: number } {
  let diff = 0;
  let index = -1;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= diff)) {
      // also catches NaN
      diff = d;
      index = i;
      if (Number.isNaN(d)) break;
    }
  }
  return { diff, index };
}

/**
 * Straightforward reference written from the model contract: explicit reflect-padded copy,
 * dense 128x201 filterbank from the librosa formulas, O(N^2) DFT per frame, Math.log10.
 */
function referenceLogMel(pcm: Float32Array): { data: Float64Array; nFrames: number } {
  const x = new Float64Array(Math.max(pcm.length, 8000));
  x.set(pcm);
  const n = x.length;
  const xp = new Float64Array(n + 400);
  xp.set(x, 200);
  for (let k = 1; k <= 200; k++) {
    xp[200 - k] = x[k]!;
    xp[200 + n - 1 + k] = x[n - 1 - k]!;
  }
  const mel = (f: number): number => (f < 1000 ? (3 * f) / 200 : 15 + (Math.log(f / 1000) * 27) / Math.log(6.4));
  const hz = (m: number): number => (m < 15 ? (200 * m) / 3 : 1000 * Math.exp(((m - 15) * Math.log(6.4)) / 27));
  const f = Array.from({ length: 130 }, (_, i) => hz((mel(8000) * i) / 129));
  const W = Array.from({ length: 128 }, (_, m) =>
    Array.from({ length: 201 }, (_, k) => {
      const lower = (40 * k - f[m]!) / (f[m + 1]! - f[m]!);
      const upper = (f[m + 2]! - 40 * k) / (f[m + 2]! - f[m + 1]!);
      return Math.max(0, Math.min(lower, upper)) * (2 / (f[m + 2]! - f[m]!));
    }),
  );
  const hann = Array.from({ length: 400 }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / 400));
  const T = Math.floor(n / 160);
  const L = new Float64Array(128 * T);
  const P = new Float64Array(201);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k <= 200; k++) {
      let re = 0;
      let im = 0;
      for (let j = 0; j < 400; j++) {
        const v = xp[160 * t + j]! * hann[j]!;
        const a = (-2 * Math.PI * ((j * k) % 400)) / 400;
        re += v * Math.cos(a);
        im += v * Math.sin(a);
      }
      P[k] = re * re + im * im;
    }
    for (let m = 0; m < 128; m++) {
      let s = 0;
      for (let k = 0; k <= 200; k++) s += W[m]![k]! * P[k]!;
      L[m * T + t] = Math.log10(Math.max(s, 1e-10));
    }
  }
  let max = -Infinity;
  for (const v of L) max = Math.max(max, v);
  for (let i = 0; i < L.length; i++) L[i] = (Math.max(L[i]!, max - 8) + 4) / 4;
  return { data: L, nFrames: T };
}

describe('logMel golden files', () => {
  it.each(['chirp', 'noise', 'silence'])('%s matches every value within tolerance_abs', (name) => {
    const meta = JSON.parse(readFileSync(sharedPath('golden', 'mel', `${name}.json`), 'utf8')) as GoldenMeta;
    const pcm = readF32(sharedPath('golden', 'mel', `${name}.pcm.f32`));
    const expected = readF32(sharedPath('golden', 'mel', `${name}.mel.f32`));
    expect(pcm.length).toBe(meta.samples);
    const [nMels, T] = meta.mel_shape;
    expect(nMels).toBe(N_MELS);
    expect(T).toBe(Math.floor(meta.samples / HOP_LENGTH));
    expect(expected.length).toBe(nMels * T);

    const out = logMel(pcm);
    expect(out.nFrames).toBe(T);
    expect(out.data.length).toBe(expected.length);
    const { diff, index } = maxAbsDiff(out.data, expected);
    const where = `index ${index} (mel ${Math.floor(index / T)}, frame ${index % T}): ours ${out.data[index]}, golden ${expected[index]}`;
    expect(diff, `${name}: max abs diff ${diff} at ${where}`).toBeLessThanOrEqual(meta.tolerance_abs);
  });
});

describe('logMel', () => {
  it('agrees with a naive reference (odd length, reflect edges, dense filterbank, Math.log10)', () => {
    const next = rng(11);
    // 8123 samples: not a multiple of 160, so the last frames read the reflected tail.
    const pcm = Float32Array.from({ length: 8123 }, (_, i) => 0.4 * Math.sin(i * 0.07) * Math.sin(i * 0.0011) + 0.05 * next());
    const ref = referenceLogMel(pcm);
    const out = logMel(pcm);
    expect(out.nFrames).toBe(ref.nFrames);
    const { diff, index } = maxAbsDiff(out.data, Float32Array.from(ref.data));
    expect(diff, `max abs diff ${diff} at index ${index}`).toBeLessThan(1e-5);
  });

  it('zero-pads clips shorter than 0.5 s at the tail: 0.3 s -> 50 frames', () => {
    const next = rng(5);
    const short = Float32Array.from({ length: 4800 }, () => 0.1 * next());
    const out = logMel(short);
    expect(out.nFrames).toBe(50);
    expect(out.data.length).toBe(N_MELS * 50);
    const padded = new Float32Array(MIN_SAMPLES);
    padded.set(short);
    expect(out.data).toEqual(logMel(padded).data);
    expect(logMel(new Float32Array(0)).nFrames).toBe(50);
  });

  it('keeps native length: 30 s -> 3000 frames, 12.345 s -> floor(N/160), nothing padded to 30 s', () => {
    const next = rng(9);
    const thirty = Float32Array.from({ length: 30 * 16000 }, () => 0.1 * next());
    const a = logMel(thirty);
    expect(a.nFrames).toBe(3000);
    expect(a.data.length).toBe(N_MELS * 3000);

    const n = Math.round(12.345 * 16000); // 197520
    const b = logMel(thirty.subarray(0, n));
    expect(b.nFrames).toBe(Math.floor(n / 160));
    expect(b.nFrames).toBe(1234);

    for (const len of [8000, 8159, 8160, 8161, 16000, 16001]) expect(logMel(new Float32Array(len)).nFrames).toBe(Math.floor(len / 160));
  });

  it('gives -1.5 everywhere for silence', () => {
    const out = logMel(new Float32Array(16000));
    expect(out.data.every((v) => v === -1.5)).toBe(true);
  });

  it('clamps the dynamic range to 8 decades below the clip maximum', () => {
    // A loud tone in the first half, digital silence in the second.
    const pcm = new Float32Array(16000);
    for (let i = 0; i < 8000; i++) pcm[i] = 0.5 * Math.sin((2 * Math.PI * 1000 * i) / 16000);
    const { data } = logMel(pcm);
    let max = -Infinity;
    let min = Infinity;
    for (const v of data) {
      max = Math.max(max, v);
      min = Math.min(min, v);
    }
    expect(min).toBeCloseTo(max - 2, 6); // 8 decades = 2 after the /4 scaling
  });

  it('does not modify its input', () => {
    const pcm = Float32Array.from({ length: 9000 }, rng(2));
    const copy = pcm.slice();
    logMel(pcm);
    expect(pcm).toEqual(copy);
  });
});

describe('melFilterBank', () => {
  it('has 128 nonempty, nonnegative filters in bin order with Slaney (unit-area) normalisation', () => {
    const { firstBin, offsets, weights } = melFilterBank();
    expect(firstBin.length).toBe(N_MELS);
    expect(offsets.length).toBe(N_MELS + 1);
    expect(offsets[N_MELS]).toBe(weights.length);
    // Sparse: far fewer weights than the dense 128 x 201.
    expect(weights.length).toBeLessThan(2 * 201);
    let wide = 0;
    for (let m = 0; m < N_MELS; m++) {
      const len = offsets[m + 1]! - offsets[m]!;
      expect(len, `filter ${m}`).toBeGreaterThan(0);
      expect(firstBin[m]! + len).toBeLessThanOrEqual(201);
      if (m > 0) expect(firstBin[m]!).toBeGreaterThanOrEqual(firstBin[m - 1]!);
      let sum = 0;
      for (let i = offsets[m]!; i < offsets[m + 1]!; i++) {
        expect(weights[i]!).toBeGreaterThan(0);
        sum += weights[i]!;
      }
      // Slaney norm scales each triangle to unit area in Hz; sampled every 40 Hz that holds
      // approximately once a filter spans several bins (the top 23 filters span 6-9 bins).
      if (len >= 6) {
        wide++;
        expect(Math.abs(sum * 40 - 1), `filter ${m} area`).toBeLessThan(0.025);
      }
    }
    expect(wide).toBeGreaterThan(10);
    expect(firstBin[0]).toBe(1); // 0 Hz is the lower edge of filter 0, so its weight is 0
    // librosa.filters.mel(sr=16000, n_fft=400, n_mels=128, norm='slaney')[0, 1]
    expect(weights[0]).toBeCloseTo(0.012373986, 8);
  });
});
