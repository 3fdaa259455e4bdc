import { AudioError } from './errors.js';
import { resample } from './resample.js';
import { decodeWav, type DecodedAudio } from './wav.js';

/** The model's input rate. */
export const SAMPLE_RATE = 16000;

/**
 * Averages the channels into one new array (as the reference's `np.mean` over channels), rejecting
 * NaN/infinite samples: they would spread through the resampler and the peak normalisation.
 */
export function toMono(channels: Float32Array[]): Float32Array {
  const count = channels.length;
  const first = channels[0];
  if (first === undefined) throw new AudioError('invalid', 'audio has no channels');
  const n = first.length;
  if (channels.some((ch) => ch.length !== n)) throw new AudioError('invalid', 'audio channels differ in length');
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let c = 0; c < count; c++) sum += channels[c]![i]!;
    // A sum of finite float32 values cannot overflow a double, so this catches every NaN/Inf.
    if (!Number.isFinite(sum)) throw new AudioError('invalid', 'audio contains NaN or infinite samples');
    out[i] = sum / count;
  }
  return out;
}

/**
 * The reference's `float_range_normalize`, in place: audio whose peak exceeds 1 is divided by the
 * peak; audio within [-1, 1] is left alone. The reference then clips to [-1, 1], which is a no-op
 * here: |x| <= peak implies |x / peak| <= 1 under correctly rounded division.
 */
export function floatRangeNormalize(x: Float32Array): Float32Array {
  let peak = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]!);
    if (a > peak) peak = a;
  }
  if (peak > 1) {
    for (let i = 0; i < x.length; i++) x[i] = x[i]! / peak;
  }
  return x;
}

/** Decoded audio to model input: channel mean, resampled to 16 kHz, peak-limited to [-1, 1]. */
export function toModelPcm(audio: DecodedAudio): Float32Array {
  const mono = toMono(audio.channels);
  const pcm = audio.sampleRate === SAMPLE_RATE ? mono : resample(mono, audio.sampleRate, SAMPLE_RATE);
  return floatRangeNormalize(pcm);
}

export function decodeWavToPcm(bytes: Uint8Array): Float32Array {
  return toModelPcm(decodeWav(bytes));
}
