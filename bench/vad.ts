/**
 * Voice activity detection speed (src/audio/vad.ts): detectSpeech and planSegments on minutes of
 * 16 kHz audio, reported as ms per minute of audio and seconds per hour.
 *
 *   node --import tsx bench/vad.ts            (MINUTES=60 RUNS=3 node --import tsx bench/vad.ts)
 *
 * Speech is the voices-in-the-wild clips back to back (from the shared folder, see SHARED_DIR);
 * noise is stationary white noise, the case where every frame reaches the voicing analysis.
 */
import { readFileSync } from 'node:fs';
import { decodeWavToPcm, SAMPLE_RATE } from '../src/audio/pcm.js';
import { detectSpeech, planSegments } from '../src/audio/vad.js';
import { mulberry32 } from '../tools/random.js';
import { sharedPath } from '../test/support/shared.js';

const MINUTES = Math.max(1, Number(process.env.MINUTES ?? 10));
const RUNS = Math.max(1, Number(process.env.RUNS ?? 5));
const N = Math.round(MINUTES * 60 * SAMPLE_RATE);

function speech(): Float32Array {
  const names = ['noise', 'far_field', 'obstructed', 'distortion', 'recording', 'echo', 'dropout', 'mixed'];
  const clips = names.map((name) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`))));
  const out = new Float32Array(N);
  for (let at = 0, i = 0; at < N; i++) {
    const clip = clips[i % clips.length]!;
    out.set(clip.subarray(0, Math.min(clip.length, N - at)), at);
    at += clip.length;
  }
  return out;
}

function whiteNoise(): Float32Array {
  const next = mulberry32(1);
  return Float32Array.from({ length: N }, () => 0.1 * (next() * 2 - 1));
}

function median(fn: () => void): number {
  fn();
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return ms[ms.length >> 1]!;
}

console.log(`VAD, ${MINUTES} min of 16 kHz audio, 1 warm-up + ${RUNS} timed runs (median); node ${process.version}, ${process.platform}/${process.arch}`);
console.log('| audio        | detectSpeech ms/min | planSegments ms/min | s per hour | regions | segments |');
console.log('|--------------|--------------------:|--------------------:|-----------:|--------:|---------:|');
for (const [name, pcm] of [
  ['speech clips', speech()],
  ['white noise', whiteNoise()],
  ['silence', new Float32Array(N)],
] as const) {
  const regions = detectSpeech(pcm);
  const segments = planSegments(pcm, regions, { maxSeconds: 15 });
  const detect = median(() => detectSpeech(pcm)) / MINUTES;
  const plan = median(() => planSegments(pcm, regions, { maxSeconds: 15 })) / MINUTES;
  const row = [name.padEnd(12), detect.toFixed(1).padStart(19), plan.toFixed(2).padStart(19), (((detect + plan) * 60) / 1000).toFixed(2).padStart(10)];
  console.log(`| ${row.join(' | ')} | ${String(regions.length).padStart(7)} | ${String(segments.length).padStart(8)} |`);
}
