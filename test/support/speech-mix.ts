/**
 * Speech and noise made at test time, for voice activity tests and bench/vad.ts: speech synthesised by espeak-ng
 * (Debian package espeak-ng), noises generated in code, mixed at a known signal-to-noise ratio, with the truth
 * (which 32 ms frames hold speech) taken from the clean speech's energy.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ComplexFft } from '../../src/audio/fft.js';
import { decodeWavToPcm, SAMPLE_RATE as SR } from '../../src/audio/pcm.js';
import { VAD_FRAME_SAMPLES as FRAME } from '../../src/audio/silero-vad.js';
import type { SpeechRegion } from '../../src/audio/vad.js';
import { mulberry32 } from '../../tools/random.js';

export interface Voice {
  /** espeak-ng voice and variant, e.g. 'en-us+m3' */
  voice: string;
  /** 0-99; 50 is the voice's own */
  pitch: number;
  /** words per minute */
  speed: number;
}

export const VOICE: Voice = { voice: 'en-us', pitch: 50, speed: 165 };
/** A low male voice: fundamental ~85 Hz, where the hand-written detector lost most speech. */
export const LOW_VOICE: Voice = { voice: 'en-us+m3', pitch: 15, speed: 150 };
const BABBLE_VOICES: Voice[] = [
  { voice: 'en-gb', pitch: 40, speed: 170 },
  { voice: 'en-us+f2', pitch: 60, speed: 175 },
  { voice: 'en-gb-x-rp+m1', pitch: 30, speed: 160 },
  { voice: 'en-us+f4', pitch: 70, speed: 180 },
  { voice: 'en-029+m2', pitch: 45, speed: 165 },
  { voice: 'en-gb-scotland+f1', pitch: 55, speed: 170 },
];
export const SENTENCES = [
  'The quick brown fox jumps over the lazy dog near the river bank.',
  'Please call Stella and ask her to bring these things with her from the store.',
  'Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.',
  'We also need a small plastic snake and a big toy frog for the kids.',
  'She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.',
  'When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.',
];

/** `text` spoken by espeak-ng, as 16 kHz mono. */
export function say(text: string, v: Voice = VOICE): Float32Array {
  // espeak-ng's --stdout WAV has no length; a file has one.
  const dir = mkdtempSync(join(tmpdir(), 'speech-mix-'));
  try {
    const file = join(dir, 'say.wav');
    execFileSync('espeak-ng', ['-v', v.voice, '-p', String(v.pitch), '-s', String(v.speed), '-w', file, text]);
    return decodeWavToPcm(readFileSync(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('espeak-ng is not installed (apt-get install espeak-ng)');
    throw err;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function silence(seconds: number): Float32Array {
  return new Float32Array(Math.round(seconds * SR));
}

export function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function rms(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / Math.max(1, x.length));
}

export function scaleTo(x: Float32Array, target: number): Float32Array {
  const g = target / Math.max(rms(x), 1e-30);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! * g;
  return x;
}

function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

export type Colour = 'white' | 'pink' | 'brown';
/** Stationary Gaussian noise at the given RMS: white, pink (Kellet's filter, -3 dB/octave) or brown (leaky integrator, -6 dB/octave). */
export function noise(colour: Colour, seconds: number, level: number, seed: number): Float32Array {
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
export function tone(seconds: number, freqs: number[], amplitude: number): Float32Array {
  const x = new Float32Array(Math.round(seconds * SR));
  for (let i = 0; i < x.length; i++) {
    let v = 0;
    freqs.forEach((f, h) => (v += (amplitude / (h + 1)) * Math.sin((2 * Math.PI * f * i) / SR)));
    x[i] = v;
  }
  return x;
}

/**
 * Music-like: chords of plucked harmonic notes (8 harmonics at 1/h, 5 ms attack, exponential decay) on a
 * pentatonic scale, a new chord every 0.2-0.5 s, a bass note under each, at the given RMS.
 */
export function music(seconds: number, level: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const x = new Float32Array(Math.round(seconds * SR));
  const scale = [0, 2, 4, 7, 9];
  const note = (semitones: number) => 220 * 2 ** (semitones / 12);
  for (let at = 0; at < x.length; ) {
    const length = Math.round((0.2 + 0.3 * next()) * SR);
    const root = Math.floor(next() * 10);
    const pitches = [note(scale[root % 5]! + 12 * Math.floor(root / 5) - 24)];
    for (const step of [0, 2, 4]) pitches.push(note(scale[(root + step) % 5]! + 12 * Math.floor((root + step) / 5)));
    const ring = Math.min(x.length - at, length * 2);
    for (const f of pitches) {
      for (let h = 1; h <= 8 && f * h < SR / 2; h++) {
        const w = (2 * Math.PI * f * h) / SR;
        const decay = Math.exp(-1 / (0.15 * SR * (1 + 1 / h)));
        const attack = 0.005 * SR;
        for (let i = 0, d = 1 / h; i < ring; i++, d *= decay) x[at + i] = x[at + i]! + Math.min(1, i / attack) * d * Math.sin(w * i);
      }
    }
    at += length;
  }
  return scaleTo(x, level);
}

const talkers: Float32Array[] = [];
/** Talker t of the babble: a voice of its own saying three sentences from the t-th on, at RMS 1 (made once). */
function talker(t: number): Float32Array {
  const text = [0, 1, 2].map((i) => SENTENCES[(t + i) % SENTENCES.length]!).join(' ');
  talkers[t] ??= scaleTo(say(text, BABBLE_VOICES[t % BABBLE_VOICES.length]!), 1);
  return talkers[t];
}

/** Several espeak voices saying different sentences at once, looped to `seconds`, at the given RMS. */
export function babble(seconds: number, level: number, count = 5): Float32Array {
  const x = new Float32Array(Math.round(seconds * SR));
  for (let t = 0; t < count; t++) {
    const speech = talker(t);
    // Talkers start at different points, and loop, so the babble never pauses as a whole.
    const offset = Math.round((t * 0.37 * speech.length) % speech.length);
    for (let i = 0; i < x.length; i++) x[i] = x[i]! + speech[(offset + i) % speech.length]!;
  }
  return scaleTo(x, level);
}

/**
 * A room: the dry signal convolved with an impulse response that is a unit direct path plus Gaussian noise under
 * an exponential envelope reaching -60 dB at `rt60` seconds (20 ms pre-delay, energy ratio direct : reverb
 * = 1 : `wet`). The output is longer than the input by the tail.
 */
export function reverberate(x: Float32Array, rt60: number, wet: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const length = Math.round(rt60 * SR);
  const ir = new Float32Array(length);
  const delay = Math.round(0.02 * SR);
  let energy = 0;
  for (let i = delay; i < length; i++) {
    ir[i] = gaussian(next) * 10 ** ((-3 * (i - delay)) / (length - delay));
    energy += ir[i]! * ir[i]!;
  }
  const g = Math.sqrt(wet / energy);
  for (let i = delay; i < length; i++) ir[i] = ir[i]! * g;
  ir[0] = 1;
  return convolve(x, ir);
}

/** Full linear convolution, by FFT (a direct one of seconds of audio with a second-long response takes seconds). */
function convolve(x: Float32Array, h: Float32Array): Float32Array {
  let n = 1;
  while (n < x.length + h.length - 1) n *= 2;
  const fft = new ComplexFft(n);
  const xr = new Float64Array(n);
  const xi = new Float64Array(n);
  const hr = new Float64Array(n);
  const hi = new Float64Array(n);
  xr.set(x);
  hr.set(h);
  fft.forward(xr, xi);
  fft.forward(hr, hi);
  // Product, conjugated: the forward transform of the conjugate, conjugated and scaled, is the inverse.
  for (let k = 0; k < n; k++) {
    const re = xr[k]! * hr[k]! - xi[k]! * hi[k]!;
    const im = xr[k]! * hi[k]! + xi[k]! * hr[k]!;
    xr[k] = re;
    xi[k] = -im;
  }
  fft.forward(xr, xi);
  return Float32Array.from({ length: x.length + h.length - 1 }, (_, i) => xr[i]! / n);
}

/** Hard clipping at +-`limit`. */
export function clip(x: Float32Array, limit: number): Float32Array {
  return x.map((v) => Math.max(-limit, Math.min(limit, v)));
}

/** 1 for each 32 ms frame (as the VAD frames it) whose clean energy is within `rangeDb` of the loudest frame. */
export function speechFrames(clean: Float32Array, rangeDb = 35): Uint8Array {
  const frames = Math.ceil(clean.length / FRAME);
  const energy = new Float64Array(frames);
  for (let i = 0; i < clean.length; i++) {
    const f = Math.floor(i / FRAME);
    energy[f] = energy[f]! + clean[i]! * clean[i]!;
  }
  const floor = Math.max(...energy) * 10 ** (-rangeDb / 10);
  return Uint8Array.from(energy, (e) => (e > floor ? 1 : 0));
}

/** RMS of the speech frames only (the active speech level). */
export function activeLevel(clean: Float32Array, truth: Uint8Array): number {
  let s = 0;
  let n = 0;
  for (let i = 0; i < clean.length; i++) {
    if (!truth[Math.floor(i / FRAME)]) continue;
    s += clean[i]! * clean[i]!;
    n++;
  }
  return Math.sqrt(s / Math.max(1, n));
}

/** speech + noise, the noise scaled so that the active speech level is `snrDb` over the noise's RMS. */
export function mixAt(speech: Float32Array, truth: Uint8Array, noiseOf: (seconds: number) => Float32Array, snrDb: number): Float32Array {
  const n = noiseOf(speech.length / SR);
  scaleTo(n, activeLevel(speech, truth) / 10 ** (snrDb / 20));
  return speech.map((v, i) => v + (n[i] ?? 0));
}

/** Fraction of the truth's speech frames whose middle lies inside a region. */
export function frameRecall(truth: Uint8Array, regions: SpeechRegion[]): number {
  let speech = 0;
  let found = 0;
  truth.forEach((t, f) => {
    if (!t) return;
    speech++;
    const mid = ((f + 0.5) * FRAME) / SR;
    if (regions.some((r) => r.start <= mid && mid < r.end)) found++;
  });
  return found / Math.max(1, speech);
}

export function totalSeconds(regions: SpeechRegion[]): number {
  return regions.reduce((s, r) => s + r.end - r.start, 0);
}

/** The kinds of noisy speech the VAD tests and bench measure. */
export const NOISE_KINDS = ['white', 'pink', 'brown', 'babble', 'music', 'reverb', 'clipped'] as const;
export type NoiseKind = (typeof NOISE_KINDS)[number];

export interface NoisyCase {
  /** at -20 dBFS RMS */
  pcm: Float32Array;
  truth: Uint8Array;
}

/**
 * `speech` (with 0.5 s of silence each side) under noise of one kind at `snrDb`: coloured noise, babble of five
 * other voices, music, pink noise over the speech reverberated (RT60 0.8 s, as much reverb as direct sound), or
 * pink noise then clipping at a quarter of the mix's peak. The truth is always the dry speech's.
 */
export function noisyCase(speech: Float32Array, kind: NoiseKind, snrDb: number, seed = 1): NoisyCase {
  const { pcm, truth } = mixCase(speech, kind, snrDb, seed);
  return { pcm: scaleTo(pcm, 0.1), truth };
}

function mixCase(speech: Float32Array, kind: NoiseKind, snrDb: number, seed: number): NoisyCase {
  const dry = concat(silence(0.5), speech, silence(0.5));
  const truth = speechFrames(dry);
  const level = 1;
  const pink = (s: number) => noise('pink', s, level, seed);
  switch (kind) {
    case 'white':
    case 'pink':
    case 'brown':
      return { pcm: mixAt(dry, truth, (s) => noise(kind, s, level, seed), snrDb), truth };
    case 'babble':
      return { pcm: mixAt(dry, truth, (s) => babble(s, level), snrDb), truth };
    case 'music':
      return { pcm: mixAt(dry, truth, (s) => music(s, level, seed), snrDb), truth };
    case 'reverb': {
      const wet = reverberate(dry, 0.8, 1, seed).subarray(0, dry.length);
      return { pcm: mixAt(wet, truth, pink, snrDb), truth };
    }
    case 'clipped': {
      const mixed = mixAt(dry, truth, pink, snrDb);
      const peak = mixed.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      return { pcm: clip(mixed, peak / 4), truth };
    }
  }
}
