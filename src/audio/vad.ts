/**
 * Voice activity detection and segment planning for long-audio transcription, on 16 kHz mono PCM.
 *
 * `detectSpeech` finds speech by its voicing: vowels and voiced consonants are periodic, so the
 * spectrum carries harmonics of a fundamental in 80-400 Hz. Stationary noise (white, pink, brown),
 * hum and digital silence are not, at any level. Per frame (64 ms Hann window every 20 ms, on a
 * 2:1-decimated 8 kHz copy):
 *
 * 1. Power spectrum, whitened bin by bin by a noise floor: a low quantile of that bin over 1 s
 *    blocks, the least of the blocks within +-3 s. Whitening flattens coloured noise and removes
 *    stationary tones, so only what changes against the background can look harmonic.
 * 2. Voicing = the peak, over periods of 2.5-12.5 ms, of the autocorrelation of that whitened
 *    spectrum up to 1.5 kHz (the inverse transform of the whitened power), normalised by its value
 *    at lag 0 and by the window's own autocorrelation. A harmonic spectrum scores near 1; whitened
 *    noise stays below ~0.5.
 * 3. A frame is voiced when it and its neighbour score >= 0.5 with the same period; the pitch track
 *    then grows to neighbours scoring >= 0.35 with a continuous period. Noise practically never
 *    produces two consecutive frames with one period; speech produces runs of them.
 *
 * Voiced runs closer than `minSilenceSeconds` form one region; a region needs `minVoicedSeconds`
 * of voicing; its edges grow over unvoiced sounds (consonants) while the 100-4000 Hz energy stays
 * `extendDb` over its floor, then get `paddingSeconds`. Frames under `minLevelDb` are never speech.
 *
 * `planSegments` turns regions into what the model transcribes one by one: regions closer than a
 * gap are grouped, and a group longer than `maxSeconds` is cut where the audio is quietest (a
 * dynamic programme over 10 ms points that minimises the loudness at the cuts, pauses between
 * regions being free), so segments follow pauses rather than a fixed grid.
 */

import { RealFft } from './fft.js';
import { SAMPLE_RATE } from './pcm.js';

/** Seconds in the input's time line. */
export interface SpeechRegion {
  start: number;
  end: number;
}

export interface VadOptions {
  /** Analysis hop (s): the time resolution of region edges. */
  hopSeconds: number;
  /** Analysis window (s); 64 ms resolves the harmonics of low voices (F0 ~80-100 Hz). */
  windowSeconds: number;
  /** Fundamental frequency search range (Hz). */
  minF0: number;
  maxF0: number;
  /** Harmonics up to this frequency (Hz) count: in noise the higher ones drown first. */
  maxHarmonicHz: number;
  /** Voicing score that starts a voiced stretch (needs two consecutive frames with one period). */
  voicingThreshold: number;
  /** Voicing score that continues a voiced stretch with a continuous period. */
  continueThreshold: number;
  /** Frames whose 100-4000 Hz mean square is below this (dBFS) are never speech: silence, dither. */
  minLevelDb: number;
  /** Noise floor: this quantile of each frequency bin over blocks of noiseBlockSeconds... */
  noiseQuantile: number;
  noiseBlockSeconds: number;
  /** ...taking the lowest block estimate within +-noiseContextSeconds. */
  noiseContextSeconds: number;
  /** Region edges extend over unvoiced sound while band energy is this far over the floor (dB)... */
  extendDb: number;
  /** ...by at most this much (s) on each side. */
  maxExtendSeconds: number;
  /** Pauses shorter than this (s) do not split a region. */
  minSilenceSeconds: number;
  /** A region needs at least this much voiced speech (s): shorter blips are not speech. */
  minVoicedSeconds: number;
  /** Added before and after each region (s), within the audio. */
  paddingSeconds: number;
}

export const DEFAULT_VAD_OPTIONS: Readonly<VadOptions> = Object.freeze({
  hopSeconds: 0.02,
  windowSeconds: 0.064,
  minF0: 80,
  maxF0: 400,
  maxHarmonicHz: 1500,
  voicingThreshold: 0.5,
  continueThreshold: 0.35,
  minLevelDb: -70,
  noiseQuantile: 0.1,
  noiseBlockSeconds: 1,
  noiseContextSeconds: 3,
  extendDb: 3,
  maxExtendSeconds: 0.3,
  minSilenceSeconds: 0.6,
  minVoicedSeconds: 0.1,
  paddingSeconds: 0.15,
});

/** Analysis rate: speech's harmonics and most of its energy lie below 4 kHz, and it halves the FFT. */
const RATE = SAMPLE_RATE / 2;
/** Lowest spectral bin used for voicing (Hz): below it there is only rumble. */
const LOWEST_HZ = 60;
/** Band for the level gate and the energy over the floor (Hz); the top is the analysis Nyquist. */
const BAND_LOW_HZ = 100;
/** Autocorrelation lag step, in 8 kHz samples (0.25 ms): the transform has n / ACF_UNIT points. */
const ACF_UNIT = 2;
/** Consecutive voiced frames may differ in period by this fraction. */
const PERIOD_TOLERANCE = 0.1;

interface Features {
  frames: number;
  /** Voicing score per frame (0 for frames under the level gate). */
  voicing: Float32Array;
  /** Period of the voicing peak per frame, in autocorrelation lag units. */
  period: Float32Array;
  /** 100-4000 Hz energy over its noise floor (dB). */
  snrDb: Float32Array;
}

/** Speech regions of 16 kHz mono PCM, sorted and disjoint, in seconds within [0, duration]. */
export function detectSpeech(pcm: Float32Array, options: Partial<VadOptions> = {}): SpeechRegion[] {
  const o = resolveOptions(options);
  if (pcm.length === 0) return [];
  return regionsFromFeatures(analyse(pcm, o), o, pcm.length / SAMPLE_RATE);
}

function resolveOptions(options: Partial<VadOptions>): VadOptions {
  const o: VadOptions = { ...DEFAULT_VAD_OPTIONS, ...options };
  for (const [key, value] of Object.entries(o)) {
    if (!Number.isFinite(value)) throw new RangeError(`VAD option ${key} must be a finite number, got ${String(value)}`);
  }
  const hop = o.hopSeconds * SAMPLE_RATE;
  const n = o.windowSeconds * RATE;
  if (!(hop >= 2 && Math.abs(hop / 2 - Math.round(hop / 2)) < 1e-6)) throw new RangeError(`hopSeconds must be a whole number of 8 kHz samples, got ${o.hopSeconds}`);
  if (!(n >= 64 && Math.abs(n - Math.round(n)) < 1e-6)) throw new RangeError(`windowSeconds must span >= 64 samples at 8 kHz, got ${o.windowSeconds}`);
  const lagMin = Math.floor(RATE / o.maxF0 / ACF_UNIT);
  const lagMax = Math.ceil(RATE / o.minF0 / ACF_UNIT);
  if (!(o.minF0 > 0 && o.minF0 < o.maxF0 && lagMin >= 1 && lagMax + 1 <= n / (2 * ACF_UNIT))) {
    throw new RangeError('need 0 < minF0 < maxF0 <= 2000 Hz, with two periods of minF0 in the window');
  }
  const maxHz = RATE / (2 * ACF_UNIT);
  if (!(o.maxHarmonicHz > LOWEST_HZ && o.maxHarmonicHz < maxHz)) throw new RangeError(`maxHarmonicHz must be in (${LOWEST_HZ}, ${maxHz})`);
  if (!(o.noiseQuantile > 0 && o.noiseQuantile < 1)) throw new RangeError('noiseQuantile must be in (0, 1)');
  if (!(o.noiseBlockSeconds >= o.hopSeconds)) throw new RangeError('noiseBlockSeconds must be at least one hop');
  for (const key of ['noiseContextSeconds', 'maxExtendSeconds', 'minSilenceSeconds', 'minVoicedSeconds', 'paddingSeconds'] as const) {
    if (o[key] < 0) throw new RangeError(`VAD option ${key} must be >= 0`);
  }
  return o;
}

/** Periodic Hann window of length n. */
function hann(n: number): Float64Array {
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n);
  return w;
}

/**
 * Frame features, streaming over blocks: a block's spectra (only the voicing bins) wait in a ring
 * until the blocks ahead have given their noise quantiles, so memory stays bounded for
 * hours of audio and each frame is transformed once.
 */
function analyse(pcm: Float32Array, o: VadOptions): Features {
  const hop = Math.round(o.hopSeconds * SAMPLE_RATE);
  const n = Math.round(o.windowSeconds * RATE);
  const frames = Math.ceil(pcm.length / hop);
  const binHz = RATE / n;
  const k0 = Math.max(1, Math.round(LOWEST_HZ / binHz));
  const k1 = Math.round(o.maxHarmonicHz / binHz);
  const width = k1 - k0;
  const b0 = Math.round(BAND_LOW_HZ / binHz);
  const b1 = n / 2;

  const fft = new RealFft(n);
  const window = hann(n);
  let windowPower = 0;
  for (const w of window) windowPower += w * w;
  // Sum of one-sided |X[k]|^2 over the band times this = the band's mean square (Parseval).
  const levelScale = 2 / (n * windowPower);
  const minLevel = 10 ** (o.minLevelDb / 10);
  // The floor never drops below a flat spectrum at minLevel: nearly silent blocks do not whiten.
  const minBinPower = minLevel / levelScale / (b1 - b0);

  // Autocorrelation of the whitened spectrum: an m-point real transform of the bins mirrored,
  // which holds bins below RATE / (2 * ACF_UNIT), at lags in steps of ACF_UNIT samples.
  const unit = ACF_UNIT;
  const m = n / unit;
  const acf = new RealFft(m);
  const lagMin = Math.floor(RATE / o.maxF0 / unit);
  const lagMax = Math.ceil(RATE / o.minF0 / unit);
  // A windowed frame's autocorrelation is the signal's times the window's: divide that out.
  const invWindowAcf = new Float64Array(lagMax + 2);
  for (let t = lagMin - 1; t <= lagMax + 1; t++) {
    let s = 0;
    for (let i = 0; i + t * unit < n; i++) s += window[i]! * window[i + t * unit]!;
    invWindowAcf[t] = windowPower / s;
  }

  const blockFrames = Math.max(1, Math.round(o.noiseBlockSeconds / o.hopSeconds));
  const context = Math.ceil(o.noiseContextSeconds / o.noiseBlockSeconds - 1e-9);
  const blocks = Math.ceil(frames / blockFrames);
  // Voicing smooths each frame's spectrum with its neighbours', so a block is finished once the
  // blocks `ahead` (>= 1) are in; the ring keeps those, the block and the one before it.
  const ahead = Math.max(1, context);
  const ringFrames = (ahead + 2) * blockFrames;
  const ring = new Float32Array(ringFrames * width);
  const level = new Float32Array(frames);
  const blockFloor = new Float32Array(blocks * width);
  const blockBandFloor = new Float64Array(blocks);
  const blockHasFloor = new Uint8Array(blocks);
  // Exponential (chi-squared, 2 dof) periodogram of noise: quantile q = -ln(1 - q) * mean.
  const quantileToMean = 1 / -Math.log(1 - o.noiseQuantile);
  const minQuantileFrames = Math.max(3, Math.ceil(blockFrames / 4));

  // A block's frames overlap: decimate its whole span once, then transform frames in place.
  // One hop is `half` 8 kHz samples.
  const half = hop / 2;
  const span = new Float64Array((blockFrames - 1) * half + n);
  const spectrum = new Float64Array(n / 2 + 1);
  const values = new Float64Array(blockFrames);
  const loud = new Int32Array(blockFrames);
  const loudAt = new Int32Array(blockFrames);
  const gain = new Float64Array(width);
  const x = new Float64Array(m);
  const re = new Float64Array(m / 2 + 1);
  const im = new Float64Array(m / 2 + 1);
  const voicing = new Float32Array(frames);
  const period = new Float32Array(frames);
  const snrDb = new Float32Array(frames);

  const computeBlock = (block: number): void => {
    const first = block * blockFrames;
    const last = Math.min(frames, first + blockFrames);
    let count = 0;
    // Frame f is centred on the middle of its hop, f * hop + hop / 2; its window (n samples at
    // 8 kHz) starts n 16 kHz samples earlier.
    decimate(pcm, first * hop + hop / 2 - n, span, (last - first - 1) * half + n);
    for (let f = first; f < last; f++) {
      fft.powerSpectrum(span, (f - first) * half, window, spectrum);
      let band = 0;
      for (let k = b0; k < b1; k++) band += spectrum[k]!;
      level[f] = band * levelScale;
      const at = (f % ringFrames) * width;
      for (let k = 0; k < width; k++) ring[at + k] = spectrum[k0 + k]!;
      if (level[f]! >= minLevel) {
        loud[count] = f;
        loudAt[count++] = at;
      }
    }
    // Silent frames stay out of the quantile, or noise right after digital silence would look loud.
    if (count < minQuantileFrames) return;
    blockHasFloor[block] = 1;
    const rank = Math.floor(o.noiseQuantile * (count - 1));
    for (let k = 0; k < width; k++) {
      for (let i = 0; i < count; i++) values[i] = ring[loudAt[i]! + k]!;
      blockFloor[block * width + k] = select(values, count, rank) * quantileToMean;
    }
    for (let i = 0; i < count; i++) values[i] = level[loud[i]!]!;
    blockBandFloor[block] = select(values, count, rank);
  };

  const finishBlock = (block: number): void => {
    gain.fill(Infinity);
    let bandFloor = Infinity;
    for (let c = Math.max(0, block - context); c <= Math.min(blocks - 1, block + context); c++) {
      if (!blockHasFloor[c]) continue;
      for (let k = 0; k < width; k++) gain[k] = Math.min(gain[k]!, blockFloor[c * width + k]!);
      bandFloor = Math.min(bandFloor, blockBandFloor[c]!);
    }
    // Whitening gain per bin: 1/floor, and the 1/4 of the frame smoothing below.
    for (let k = 0; k < width; k++) gain[k] = 0.25 / Math.max(gain[k]!, minBinPower);
    bandFloor = Math.max(bandFloor, minLevel);
    const first = block * blockFrames;
    const last = Math.min(frames, first + blockFrames);
    for (let f = first; f < last; f++) {
      snrDb[f] = 10 * Math.log10(Math.max(level[f]!, 1e-20) / bandFloor);
      if (level[f]! < minLevel) continue;
      const at = (f % ringFrames) * width;
      const before = (Math.max(0, f - 1) % ringFrames) * width;
      const after = (Math.min(frames - 1, f + 1) % ringFrames) * width;
      for (let k = 0; k < width; k++) {
        // [1 2 1]/4 over neighbouring frames: harmonics persist from frame to frame, noise averages down.
        const w = (ring[before + k]! + ring[after + k]! + 2 * ring[at + k]!) * gain[k]!;
        x[k0 + k] = w;
        x[m - k0 - k] = w;
      }
      acf.forward(x, re, im);
      // Normalise by at least what background at the floor would give (whitened bins average 1,
      // each counted twice): a steady tone over digital silence leaves a few bins far under the
      // floor whose shape alone would look perfectly periodic.
      const r0 = Math.max(re[0]!, 2 * width);
      let best = -Infinity;
      let bestLag = lagMin;
      for (let t = lagMin; t <= lagMax; t++) {
        const r = re[t]! * invWindowAcf[t]!;
        if (r > best) {
          best = r;
          bestLag = t;
        }
      }
      // Parabolic interpolation: the true period falls between lag units.
      const a = re[bestLag - 1]! * invWindowAcf[bestLag - 1]!;
      const c = re[bestLag + 1]! * invWindowAcf[bestLag + 1]!;
      const curvature = a - 2 * best + c;
      let peak = best;
      let lag = bestLag;
      if (curvature < 0) {
        const d = (0.5 * (a - c)) / curvature;
        peak = best - 0.25 * (a - c) * d;
        lag = bestLag + d;
      }
      voicing[f] = peak / r0;
      period[f] = lag;
    }
  };

  for (let block = 0; block < blocks + ahead; block++) {
    if (block < blocks) computeBlock(block);
    if (block >= ahead) finishBlock(block - ahead);
  }
  return { frames, voicing, period, snrDb };
}

/**
 * out[j] (j < n) = 8 kHz sample j from 16 kHz sample `start` on: a [1 3 3 1]/8 lowpass (zeros at
 * 8 kHz, -32 dB at 6.5 kHz) then every other sample; zeros outside the input. What aliases into
 * 0-4 kHz is faint, and stationary where the input is, so the noise floor absorbs it.
 */
function decimate(pcm: Float32Array, start: number, out: Float64Array, n: number): void {
  const len = pcm.length;
  if (start - 1 >= 0 && start + 2 * n + 1 <= len) {
    for (let j = 0, p = start; j < n; j++, p += 2) {
      out[j] = 0.125 * (pcm[p - 1]! + pcm[p + 2]!) + 0.375 * (pcm[p]! + pcm[p + 1]!);
    }
    return;
  }
  for (let j = 0, p = start; j < n; j++, p += 2) {
    const a = p - 1 >= 0 && p - 1 < len ? pcm[p - 1]! : 0;
    const b = p >= 0 && p < len ? pcm[p]! : 0;
    const c = p + 1 >= 0 && p + 1 < len ? pcm[p + 1]! : 0;
    const d = p + 2 >= 0 && p + 2 < len ? pcm[p + 2]! : 0;
    out[j] = 0.125 * (a + d) + 0.375 * (b + c);
  }
}

/** The rank-th smallest of a[0..count) (Hoare's quickselect; reorders a). */
function select(a: Float64Array, count: number, rank: number): number {
  let lo = 0;
  let hi = count - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (rank <= j) hi = j;
    else if (rank >= i) lo = i;
    else break;
  }
  return a[rank]!;
}

function samePeriod(a: number, b: number): boolean {
  return Math.abs(a - b) <= PERIOD_TOLERANCE * Math.min(a, b);
}

function regionsFromFeatures(features: Features, o: VadOptions, duration: number): SpeechRegion[] {
  const { frames, voicing, period, snrDb } = features;
  const voiced = new Uint8Array(frames);
  for (let f = 1; f < frames; f++) {
    if (voicing[f]! >= o.voicingThreshold && voicing[f - 1]! >= o.voicingThreshold && samePeriod(period[f]!, period[f - 1]!)) {
      voiced[f] = 1;
      voiced[f - 1] = 1;
    }
  }
  // Grow the pitch tracks both ways through weaker but continuous voicing.
  for (let f = 1; f < frames; f++) {
    if (!voiced[f] && voiced[f - 1] && voicing[f]! >= o.continueThreshold && samePeriod(period[f]!, period[f - 1]!)) voiced[f] = 1;
  }
  for (let f = frames - 2; f >= 0; f--) {
    if (!voiced[f] && voiced[f + 1] && voicing[f]! >= o.continueThreshold && samePeriod(period[f]!, period[f + 1]!)) voiced[f] = 1;
  }

  const hop = o.hopSeconds;
  // Consecutive voiced frames always join; gaps of fewer than minGap unvoiced frames are bridged.
  const minGap = Math.max(1, Math.round(o.minSilenceSeconds / hop));
  const maxExtend = Math.round(o.maxExtendSeconds / hop);
  const regions: SpeechRegion[] = [];
  let f = 0;
  while (f < frames) {
    if (!voiced[f]) {
      f++;
      continue;
    }
    const start = f;
    let end = f;
    let voicedCount = 0;
    let g = f;
    while (g < frames && g - end < minGap) {
      if (voiced[g]) {
        voicedCount++;
        end = g + 1;
      }
      g++;
    }
    f = end;
    if (voicedCount * hop < o.minVoicedSeconds) continue;
    let a = start;
    while (a > 0 && start - a < maxExtend && snrDb[a - 1]! >= o.extendDb) a--;
    let b = end;
    while (b < frames && b - end < maxExtend && snrDb[b]! >= o.extendDb) b++;
    const s = Math.max(0, a * hop - o.paddingSeconds);
    const e = Math.min(duration, b * hop + o.paddingSeconds);
    const prev = regions[regions.length - 1];
    if (prev && s <= prev.end) prev.end = Math.max(prev.end, e);
    else regions.push({ start: s, end: e });
  }
  return regions;
}

/** What the model transcribes, one by one: seconds in the input's time line. */
export interface PlannedSegment {
  start: number;
  end: number;
}

export interface PlanOptions {
  /** Longest segment (s), padding included. */
  maxSeconds: number;
  /** Regions closer than this (s) may share a segment, when it still fits maxSeconds (default 1). */
  mergeGapSeconds?: number;
  /** Added before and after each segment (s), within the audio and never over a neighbour (default 0.1). */
  paddingSeconds?: number;
}

/** Cut candidates every 10 ms. */
const CUT_STEP_SECONDS = 0.01;
/**
 * Loudness at a cut: mean square over 100 ms around it (+-5 steps), plus a quarter of that over
 * 400 ms (+-20 steps), so that of two silent pauses the longer one, and its middle, wins.
 */
const CUT_SHORT_HALF = 5;
const CUT_LONG_HALF = 20;
const CUT_LONG_WEIGHT = 0.25;
/** Price of one cut relative to the speech's mean square (-25 dB): fewer, longer segments unless a cut saves more loudness. */
const CUT_PRICE = 0.003;

/**
 * Regions -> segments of at most maxSeconds. Regions within mergeGapSeconds of each other form a
 * group; a group that fits is one segment; a longer one is cut by a dynamic programme over 10 ms
 * points that minimises the summed loudness at the cuts plus a price per cut, with every piece at
 * most maxSeconds: cuts land in pauses between regions (free) or at the quietest, longest pauses
 * inside speech. Pieces are trimmed to the speech they hold, then padded. Segments come sorted and
 * disjoint, within [0, duration].
 */
export function planSegments(pcm: Float32Array, regions: SpeechRegion[], options: PlanOptions): PlannedSegment[] {
  const { maxSeconds, mergeGapSeconds = 1, paddingSeconds = 0.1 } = options;
  if (!(Number.isFinite(maxSeconds) && maxSeconds >= CUT_STEP_SECONDS)) throw new RangeError(`maxSeconds must be at least ${CUT_STEP_SECONDS} s, got ${maxSeconds}`);
  if (!(mergeGapSeconds >= 0) || !(paddingSeconds >= 0)) throw new RangeError('mergeGapSeconds and paddingSeconds must be >= 0');
  const duration = pcm.length / SAMPLE_RATE;
  const speech = normaliseRegions(regions, duration);
  const pieces: PlannedSegment[] = [];
  let first = 0;
  while (first < speech.length) {
    let last = first;
    while (last + 1 < speech.length && speech[last + 1]!.start - speech[last]!.end < mergeGapSeconds) last++;
    const group = speech.slice(first, last + 1);
    const start = group[0]!.start;
    const end = group[group.length - 1]!.end;
    if (end - start <= maxSeconds) pieces.push({ start, end });
    else for (const piece of cutGroup(pcm, group, maxSeconds)) pieces.push(piece);
    first = last + 1;
  }
  return pad(pieces, paddingSeconds, maxSeconds, duration);
}

/** Finite regions clipped to [0, duration], sorted, overlaps merged, empty ones dropped. */
function normaliseRegions(regions: SpeechRegion[], duration: number): SpeechRegion[] {
  const clipped = regions
    .map((r) => ({ start: Math.max(0, r.start), end: Math.min(duration, r.end) }))
    .filter((r) => Number.isFinite(r.start) && Number.isFinite(r.end) && r.end > r.start)
    .sort((a, b) => a.start - b.start);
  const out: SpeechRegion[] = [];
  for (const r of clipped) {
    const prev = out[out.length - 1];
    if (prev && r.start <= prev.end) prev.end = Math.max(prev.end, r.end);
    else out.push(r);
  }
  return out;
}

/** Splits a group longer than maxSeconds at its cheapest cuts (see planSegments). */
function cutGroup(pcm: Float32Array, group: SpeechRegion[], maxSeconds: number): PlannedSegment[] {
  const start = group[0]!.start;
  const end = group[group.length - 1]!.end;
  const step = Math.round(CUT_STEP_SECONDS * SAMPLE_RATE);
  const points = Math.ceil((end - start) / CUT_STEP_SECONDS - 1e-9);
  const maxSteps = Math.floor(maxSeconds / CUT_STEP_SECONDS + 1e-9);
  const timeOf = (j: number) => Math.min(end, start + j * CUT_STEP_SECONDS);

  // Energy of each 10 ms step around the group (margins for the loudness windows), prefix-summed.
  const origin = Math.round(start * SAMPLE_RATE) - CUT_LONG_HALF * step;
  const steps = points + 2 * CUT_LONG_HALF;
  const prefix = new Float64Array(steps + 1);
  for (let i = 0; i < steps; i++) {
    let e = 0;
    const from = Math.max(0, origin + i * step);
    const to = Math.min(pcm.length, origin + (i + 1) * step);
    for (let t = from; t < to; t++) e += pcm[t]! * pcm[t]!;
    prefix[i + 1] = prefix[i]! + e;
  }
  const samplesIn = (lo: number, hi: number) => Math.max(1, Math.min(pcm.length, origin + hi * step) - Math.max(0, origin + lo * step));
  const meanSquare = (j: number, halfWidth: number) => {
    const lo = CUT_LONG_HALF + j - halfWidth;
    const hi = CUT_LONG_HALF + j + halfWidth;
    return (prefix[hi]! - prefix[lo]!) / samplesIn(lo, hi);
  };

  // Reference loudness: the group's speech.
  let speechEnergy = 0;
  let speechSamples = 0;
  for (const r of group) {
    const from = Math.round(r.start * SAMPLE_RATE);
    const to = Math.min(pcm.length, Math.round(r.end * SAMPLE_RATE));
    for (let t = from; t < to; t++) speechEnergy += pcm[t]! * pcm[t]!;
    speechSamples += Math.max(0, to - from);
  }
  const reference = Math.max(speechEnergy / Math.max(1, speechSamples), 1e-12);

  // best[j]: least cost of pieces covering [start, t_j] with a cut at j; the window minimum over
  // the previous maxSteps points is kept in a monotonic deque, so the programme is linear.
  const best = new Float64Array(points + 1);
  const back = new Int32Array(points + 1);
  const deque = new Int32Array(points + 1);
  let head = 0;
  let tail = 0;
  deque[tail++] = 0;
  let region = 0;
  for (let j = 1; j <= points; j++) {
    while (deque[head]! < j - maxSteps) head++;
    const i = deque[head]!;
    let cost = 0;
    if (j < points) {
      const t = timeOf(j);
      while (region < group.length && group[region]!.end <= t) region++;
      const inSpeech = region < group.length && group[region]!.start < t;
      cost = CUT_PRICE + (inSpeech ? (meanSquare(j, CUT_SHORT_HALF) + CUT_LONG_WEIGHT * meanSquare(j, CUT_LONG_HALF)) / reference : 0);
    }
    best[j] = best[i]! + cost;
    back[j] = i;
    while (tail > head && best[deque[tail - 1]!]! > best[j]!) tail--;
    deque[tail++] = j;
  }
  const cuts: number[] = [];
  for (let j = back[points]!; j > 0; j = back[j]!) cuts.push(timeOf(j));
  cuts.reverse();

  // Each piece shrinks to the speech inside it: a cut in a pause leaves the pause out.
  const out: PlannedSegment[] = [];
  const bounds = [start, ...cuts, end];
  let r = 0;
  for (let p = 0; p + 1 < bounds.length; p++) {
    const lo = bounds[p]!;
    const hi = bounds[p + 1]!;
    while (r < group.length && group[r]!.end <= lo) r++;
    let s = Infinity;
    let e = -Infinity;
    for (let q = r; q < group.length && group[q]!.start < hi; q++) {
      s = Math.min(s, Math.max(lo, group[q]!.start));
      e = Math.max(e, Math.min(hi, group[q]!.end));
    }
    if (e > s) out.push({ start: s, end: e });
  }
  return out;
}

/** Pads each segment by up to `padding` a side: within [0, duration], at most half-way to a neighbour, never past maxSeconds. */
function pad(segments: PlannedSegment[], padding: number, maxSeconds: number, duration: number): PlannedSegment[] {
  return segments.map((seg, i) => {
    const prev = segments[i - 1];
    const next = segments[i + 1];
    let before = Math.min(padding, prev ? (seg.start - prev.end) / 2 : seg.start);
    let after = Math.min(padding, next ? (next.start - seg.end) / 2 : duration - seg.end);
    const slack = Math.max(0, maxSeconds - (seg.end - seg.start));
    if (before + after > slack) {
      const scale = slack / (before + after);
      before *= scale;
      after *= scale;
    }
    const start = seg.start - before;
    const end = seg.end + after;
    // Times are sums of floats: keep the length within the limit despite rounding.
    return { start, end: end - start > maxSeconds ? start + maxSeconds - 1e-9 : end };
  });
}
