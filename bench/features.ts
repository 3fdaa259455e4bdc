/**
 * Log-mel feature extraction speed on 30 s of 16 kHz audio: ours (src/audio/logMel.ts) against
 * transformers.js' WhisperFeatureExtractor on the same samples.
 *
 *   npm run bench:features            (RUNS=50 npm run bench:features for more runs)
 */
import { median } from './stats.js';

process.env.ORT_DISABLE_TELEMETRY ??= '1';

const { logMel, N_MELS } = await import('../src/audio/logMel.js');

const SR = 16000;
const SECONDS = 30;
const N = SR * SECONDS;
const RUNS = Math.max(1, Number(process.env.RUNS ?? 20));
const WARMUP = 5;

/** Deterministic test signal: two tones, a slow chirp and xorshift noise, |x| < 1. */
function makeAudio(n: number): Float32Array {
  const x = new Float32Array(n);
  let s = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const noise = (s >>> 0) / 0x100000000 - 0.5;
    const t = i / SR;
    x[i] =
      0.3 * Math.sin(2 * Math.PI * 440 * t) +
      0.15 * Math.sin(2 * Math.PI * 1234.5 * t) +
      0.1 * Math.sin(2 * Math.PI * (100 + 50 * t) * t) +
      0.1 * noise;
  }
  return x;
}

interface Timing {
  median: number;
  min: number;
}

async function time(fn: () => unknown | Promise<unknown>): Promise<Timing> {
  for (let i = 0; i < WARMUP; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return { median: median(ms), min: Math.min(...ms) };
}

const fmt = (v: number): string => v.toFixed(2).padStart(9);

const audio = makeAudio(N);
console.log(`log-mel features, ${SECONDS} s of 16 kHz audio (${N} samples), ${WARMUP} warm-up + ${RUNS} timed runs`);
console.log(`node ${process.version}, ${process.platform}/${process.arch}`);

const ours = await time(() => logMel(audio));
const ref = logMel(audio);
console.log(
  `ours            : median ${fmt(ours.median)} ms, min ${fmt(ours.min)} ms  ` +
    `[${N_MELS} x ${ref.nFrames}]  real-time factor ${(ours.median / (SECONDS * 1000)).toExponential(2)} ` +
    `(${Math.round((SECONDS * 1000) / ours.median)}x faster than real time)`,
);

let theirs: Timing | undefined;
try {
  const { WhisperFeatureExtractor } = await import('@huggingface/transformers');
  // mel_filters left out: the constructor builds the same Slaney filterbank with its own
  // mel_filter_bank(201, 128, 0, 8000, 16000, 'slaney', 'slaney').
  const fe = new WhisperFeatureExtractor({
    feature_size: N_MELS,
    sampling_rate: SR,
    hop_length: 160,
    chunk_length: SECONDS,
    n_fft: 400,
    n_samples: N,
    nb_max_frames: 3000,
    padding_value: 0.0,
  });
  theirs = await time(() => fe._call(audio));
  // Cross-check: with exactly 30 s in, its 30 s pad/truncate is a no-op and the outputs must agree.
  const out = await fe._call(audio);
  const data = out.input_features.data as Float32Array;
  let maxDiff = 0;
  for (let i = 0; i < data.length; i++) maxDiff = Math.max(maxDiff, Math.abs((data[i] as number) - (ref.data[i] as number)));
  console.log(
    `transformers.js : median ${fmt(theirs.median)} ms, min ${fmt(theirs.min)} ms  ` +
      `[${out.input_features.dims.slice(1).join(' x ')}]  max |ours - theirs| = ${maxDiff.toExponential(2)}`,
  );
} catch (err) {
  console.log(`transformers.js : unavailable (${err instanceof Error ? err.message : String(err)})`);
}

const cell = (v: number | undefined, unit = ''): string => (v === undefined ? 'n/a' : v.toFixed(unit ? 1 : 2) + unit).padStart(15);
console.log('');
console.log('|                  |            ours | transformers.js |        speed-up |');
console.log('|------------------|----------------:|----------------:|----------------:|');
for (const key of ['median', 'min'] as const) {
  const a = ours[key];
  const b = theirs?.[key];
  console.log(`| ms / 30 s ${key.padEnd(6)} | ${cell(a)} | ${cell(b)} | ${cell(b === undefined ? undefined : b / a, 'x')} |`);
}
