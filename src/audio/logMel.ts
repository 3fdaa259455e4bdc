/**
 * Whisper-style 128-bin log-mel features at native length (no 30 s padding).
 *
 * The algorithm follows transformers' WhisperFeatureExtractor (Hugging Face, Apache-2.0), torch
 * path: STFT with center=True / reflect padding, periodic Hann(400), hop 160, power spectrum,
 * Slaney mel filterbank (librosa.filters.mel, norm='slaney'), log10 with a 1e-10 floor,
 * dynamic-range clamp at (clip max - 8), then (x + 4) / 4.
 */

import { RealFft } from './fft.js';

export const SAMPLE_RATE = 16000;
export const N_FFT = 400;
export const HOP_LENGTH = 160;
export const N_MELS = 128;
/** Clips shorter than 0.5 s are zero-padded at the tail to this many samples. */
export const MIN_SAMPLES = 8000;

const N_BINS = N_FFT / 2 + 1; // 201
const PAD = N_FFT / 2; // 200: center=True padding on each side

export interface LogMel {
  /** Row-major [N_MELS, nFrames] (index m * nFrames + t). */
  data: Float32Array;
  nFrames: number;
}

/** Sparse mel filterbank: filter m has weights[offsets[m] .. offsets[m+1]) starting at FFT bin firstBin[m]. */
export interface MelFilterBank {
  firstBin: Int32Array;
  offsets: Int32Array;
  weights: Float64Array;
}

function hzToMel(f: number): number {
  return f < 1000 ? (3 * f) / 200 : 15 + (Math.log(f / 1000) * 27) / Math.log(6.4);
}

function melToHz(m: number): number {
  return m < 15 ? (200 * m) / 3 : 1000 * Math.exp(((m - 15) * Math.log(6.4)) / 27);
}

/**
 * Slaney-scale, Slaney-normalised triangular filters over 0..8000 Hz, identical to
 * librosa.filters.mel(sr=16000, n_fft=400, n_mels=128, fmin=0, fmax=8000, norm='slaney').
 * Each filter spans only a few FFT bins, so only the nonzero run of each row is kept.
 */
export function melFilterBank(): MelFilterBank {
  const nPts = N_MELS + 2;
  const melMax = hzToMel(SAMPLE_RATE / 2);
  const f = new Float64Array(nPts);
  for (let i = 0; i < nPts; i++) f[i] = melToHz((melMax * i) / (nPts - 1)); // mel(0) = 0
  const firstBin = new Int32Array(N_MELS);
  const offsets = new Int32Array(N_MELS + 1);
  const all: number[] = [];
  const binHz = SAMPLE_RATE / N_FFT; // 40 Hz
  for (let m = 0; m < N_MELS; m++) {
    const f0 = f[m] as number;
    const f1 = f[m + 1] as number;
    const f2 = f[m + 2] as number;
    const enorm = 2 / (f2 - f0);
    let lo = -1;
    let hi = -1;
    const row = new Float64Array(N_BINS);
    for (let k = 0; k < N_BINS; k++) {
      const hz = binHz * k;
      const w = Math.max(0, Math.min((hz - f0) / (f1 - f0), (f2 - hz) / (f2 - f1))) * enorm;
      row[k] = w;
      if (w > 0) {
        if (lo < 0) lo = k;
        hi = k;
      }
    }
    if (lo < 0) {
      // Cannot happen for these constants (every 128-bin Slaney filter covers >= 1 bin); keep it empty.
      lo = 0;
      hi = -1;
    }
    firstBin[m] = lo;
    offsets[m] = all.length;
    for (let k = lo; k <= hi; k++) all.push(row[k] as number);
  }
  offsets[N_MELS] = all.length;
  return { firstBin, offsets, weights: Float64Array.from(all) };
}

interface Plan {
  fft: RealFft;
  window: Float64Array;
  mel: MelFilterBank;
  /** Power spectra of two consecutive frames. */
  power: Float64Array;
  power2: Float64Array;
  /** One frame gathered with reflection, for the frames that touch either edge. */
  edge: Float32Array;
  /** log10(1 + i / 2^LOG_TABLE_BITS), i = 0..2^LOG_TABLE_BITS. */
  logTable: Float64Array;
}

let plan: Plan | undefined;

/*
 * log10 of float32 values by table: the exponent gives the integer part, the top LOG_TABLE_BITS
 * of the mantissa index a table of log10(1 + i/2^LOG_TABLE_BITS), and the remaining bits
 * interpolate linearly. Max error is h^2/(8 ln 10) with h = 2^-11, about 2.6e-8 in log10
 * (6.5e-9 after the /4 scaling), below the float32 resolution of the output. Math.log10 is an
 * out-of-line call in V8 and took about a quarter of the 30 s time; the table takes ~1 ms.
 */
const LOG_TABLE_BITS = 11;
const LOG_FRAC_BITS = 23 - LOG_TABLE_BITS;
const LOG_FRAC_MASK = (1 << LOG_FRAC_BITS) - 1;
const LOG_FRAC_SCALE = 1 / (1 << LOG_FRAC_BITS);
const LOG10_2 = Math.log10(2);

function getPlan(): Plan {
  if (plan) return plan;
  // Periodic Hann (torch.hann_window(400)), not the symmetric one.
  const window = new Float64Array(N_FFT);
  for (let n = 0; n < N_FFT; n++) window[n] = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / N_FFT);
  const tableSize = 1 << LOG_TABLE_BITS;
  const logTable = new Float64Array(tableSize + 1);
  for (let i = 0; i <= tableSize; i++) logTable[i] = Math.log10(1 + i / tableSize);
  plan = {
    fft: new RealFft(N_FFT),
    window,
    mel: melFilterBank(),
    power: new Float64Array(N_BINS),
    power2: new Float64Array(N_BINS),
    edge: new Float32Array(N_FFT),
    logTable,
  };
  return plan;
}

/** Reflect index i into [0, n) without repeating the edge sample (numpy 'reflect'); needs n > PAD. */
function reflect(i: number, n: number): number {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

/** Power spectrum of frame t of the reflect-padded signal into `out`. */
function framePower(x: Float32Array, t: number, fft: RealFft, window: Float64Array, edge: Float32Array, out: Float64Array): void {
  const n = x.length;
  // Frame t covers padded samples [160t, 160t+400) = original samples [160t-200, 160t+200).
  const start = t * HOP_LENGTH - PAD;
  if (start >= 0 && start + N_FFT <= n) {
    fft.powerSpectrum(x, start, window, out);
  } else {
    // Edge frame: the padding mirrors the signal (torch.stft center=True, pad_mode='reflect').
    for (let j = 0; j < N_FFT; j++) edge[j] = x[reflect(start + j, n)] as number;
    fft.powerSpectrum(edge, 0, window, out);
  }
}

/**
 * The frames logMel computes for `samples` samples of 16 kHz audio: a clip shorter than 0.5 s is zero-padded to it,
 * then one frame per 160-sample hop (center=True yields floor(n/160)+1 frames; Whisper drops the last one,
 * stft[..., :-1]).
 */
export function melFrameCount(samples: number): number {
  return Math.floor(Math.max(samples, MIN_SAMPLES) / HOP_LENGTH);
}

/**
 * Log-mel features of 16 kHz mono audio at native length: melFrameCount(N) frames.
 */
export function logMel(pcm: Float32Array): LogMel {
  const { fft, window, mel, power, power2, edge, logTable: table } = getPlan();
  let x = pcm;
  if (x.length < MIN_SAMPLES) {
    // The model needs at least 0.5 s; shorter clips are zero-padded at the tail.
    x = new Float32Array(MIN_SAMPLES);
    x.set(pcm);
  }
  const nFrames = melFrameCount(x.length);
  const data = new Float32Array(N_MELS * nFrames);
  const { firstBin, offsets, weights } = mel;

  // Pass 1: mel power into `data`, two frames at a time (halves the filterbank loop overhead),
  // tracking the clip maximum.
  let maxPow = 0;
  for (let t = 0; t < nFrames; t += 2) {
    const pair = t + 1 < nFrames;
    framePower(x, t, fft, window, edge, power);
    if (pair) framePower(x, t + 1, fft, window, edge, power2);
    for (let m = 0, row = t; m < N_MELS; m++, row += nFrames) {
      const end = offsets[m + 1] as number;
      let k = firstBin[m] as number;
      let a = 0;
      let b = 0;
      for (let i = offsets[m] as number; i < end; i++, k++) {
        const w = weights[i] as number;
        a += w * (power[k] as number);
        b += w * (power2[k] as number);
      }
      data[row] = a;
      if (a > maxPow) maxPow = a;
      if (pair) {
        data[row + 1] = b;
        if (b > maxPow) maxPow = b;
      }
    }
  }

  // Pass 2: log10 with a 1e-10 floor, clamp to (max - 8), scale. Values at or below the clamp
  // threshold skip the log: they all map to the same floor value.
  const floorLog = Math.max(Math.log10(Math.max(maxPow, 1e-10)) - 8, -10);
  const threshold = Math.pow(10, floorLog);
  const floorOut = (floorLog + 4) / 4;
  const bits = new Int32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (v > threshold) {
      // v is a positive normal float32 (threshold >= 1e-10): log10 v = e*log10(2) + log10(1.mantissa).
      const b = bits[i] as number;
      const mant = b & 0x7fffff;
      const idx = mant >>> LOG_FRAC_BITS;
      const frac = (mant & LOG_FRAC_MASK) * LOG_FRAC_SCALE;
      const lo = table[idx] as number;
      const l = ((b >>> 23) - 127) * LOG10_2 + lo + frac * ((table[idx + 1] as number) - lo);
      data[i] = l > floorLog ? (l + 4) * 0.25 : floorOut;
    } else {
      data[i] = floorOut;
    }
  }
  return { data, nFrames };
}
