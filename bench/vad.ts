/**
 * Voice activity detection (src/audio/vad.ts, Silero VAD v6): what it keeps and what it costs.
 *
 *   ORT_DISABLE_TELEMETRY=1 node --import tsx bench/vad.ts        (MINUTES=10 RUNS=3 for the cost part)
 *
 * 1. Speech kept: espeak-ng speech (a plain voice and a low one, ~84 Hz) under noises at 0 and -5 dB SNR
 *    (test/support/speech-mix.ts), the fraction of the clean speech's 32 ms frames inside a detected region.
 * 2. False speech: seconds marked as speech in 10 s of noise, tones, music, babble, silence; and how far regions
 *    run past the end of reverberated speech.
 * 3. Cost: detectSpeech and planSegments per minute of audio (real clips from the shared folder, white noise,
 *    silence) and per 32 ms frame.
 */
import { readFileSync } from 'node:fs';
import { decodeWavToPcm, SAMPLE_RATE as SR } from '../src/audio/pcm.js';
import { SileroVad, VAD_FRAME_SAMPLES } from '../src/audio/silero-vad.js';
import { detectSpeech, planSegments, type SpeechRegion } from '../src/audio/vad.js';
import { mulberry32 } from '../tools/random.js';
import { sharedPath } from '../test/support/shared.js';
import {
  babble, concat, frameRecall, LOW_VOICE, music, noise, NOISE_KINDS, noisyCase, reverberate, say, SENTENCES, silence,
  speechFrames, tone, totalSeconds, VOICE,
} from '../test/support/speech-mix.js';
import { median } from './stats.js';

const MINUTES = Math.max(1, Number(process.env.MINUTES ?? 3));
const RUNS = Math.max(1, Number(process.env.RUNS ?? 3));
const vad = await SileroVad.load();
const detect = (pcm: Float32Array): Promise<SpeechRegion[]> => detectSpeech(pcm, vad);
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

console.log(`VAD bench; node ${process.version}, ${process.platform}/${process.arch}\n`);

console.log('Speech frames kept (recall), espeak-ng speech at SNR (active speech level over noise RMS):');
console.log('| noise   | voice 0 dB | voice -5 dB | low voice 0 dB | low voice -5 dB |');
console.log('|---------|-----------:|------------:|---------------:|----------------:|');
const speech = [VOICE, LOW_VOICE].map((v) => concat(say(SENTENCES[0]!, v), silence(0.4), say(SENTENCES[1]!, v)));
/** Silero's own frames at or over 0.5, with no padding, hysteresis or turn logic: the model alone. */
async function rawRecall(truth: Uint8Array, pcm: Float32Array): Promise<number> {
  const probs = await vad.stream().push(concat(pcm, new Float32Array(VAD_FRAME_SAMPLES)));
  let speechFrames = 0;
  let kept = 0;
  truth.forEach((t, f) => {
    if (!t) return;
    speechFrames++;
    if (probs[f]! >= 0.5) kept++;
  });
  return kept / speechFrames;
}
const raw: string[] = [];
for (const kind of NOISE_KINDS) {
  const cells: string[] = [];
  const rawCells: string[] = [];
  for (const s of speech) {
    for (const snr of [0, -5]) {
      const c = noisyCase(s, kind, snr);
      cells.push(pct(frameRecall(c.truth, await detect(c.pcm))));
      rawCells.push(pct(await rawRecall(c.truth, c.pcm)));
    }
  }
  const row = (values: string[]) => `| ${kind.padEnd(7)} | ${values.map((c, i) => c.padStart([10, 11, 14, 15][i]!)).join(' | ')} |`;
  console.log(row(cells));
  raw.push(row(rawCells));
}
console.log('\nThe same, Silero VAD frames >= 0.5 alone (no padding, hysteresis or turns):');
console.log('| noise   | voice 0 dB | voice -5 dB | low voice 0 dB | low voice -5 dB |');
console.log('|---------|-----------:|------------:|---------------:|----------------:|');
for (const line of raw) console.log(line);

console.log('\nFalse speech: seconds marked in 10 s of audio with no speech:');
console.log('| audio                              | marked s |');
console.log('|------------------------------------|---------:|');
const next = mulberry32(5);
const falseCases: [string, Float32Array][] = [
  ['digital silence', silence(10)],
  ['dither (+-1 LSB)', Float32Array.from({ length: 10 * SR }, () => (next() - next()) / 32768)],
  ...(['white', 'pink', 'brown'] as const).flatMap((c) => [0.01, 0.1, 0.3].map((l, i): [string, Float32Array] => [`${c} noise RMS ${l}`, noise(c, 10, l, 20 + i)])),
  ['hum 50 Hz + harmonics', tone(10, [50, 100, 150, 200, 250], 0.3)],
  ['tone 440 Hz', tone(10, [440], 0.3)],
  ['buzz 150 Hz, 7 harmonics', tone(10, [150, 300, 450, 600, 750, 900, 1050], 0.2)],
  ['music RMS 0.1', music(10, 0.1, 7)],
  ['music RMS 0.3', music(10, 0.3, 8)],
  ['babble (5 voices) RMS 0.003', babble(10, 0.003)],
  ['babble (5 voices) RMS 0.01', babble(10, 0.01)],
  ['babble (5 voices) RMS 0.03', babble(10, 0.03)],
  ['babble (5 voices) RMS 0.1', babble(10, 0.1)],
];
for (const [name, pcm] of falseCases) console.log(`| ${name.padEnd(34)} | ${totalSeconds(await detect(pcm)).toFixed(2).padStart(8)} |`);

// Reverberation tails: how far regions run past the dry speech's last frame, padding included.
const dry = concat(silence(0.5), speech[0]!, silence(3));
const truth = speechFrames(dry);
const lastSpeech = ((truth.lastIndexOf(1) + 1) * VAD_FRAME_SAMPLES) / SR;
for (const rt60 of [0.5, 1.0]) {
  const regions = await detect(reverberate(dry, rt60, 1, 3).subarray(0, dry.length));
  const end = Math.max(...regions.map((r) => r.end));
  console.log(`| reverb RT60 ${rt60} s: region end - speech end | ${(end - lastSpeech).toFixed(2).padStart(8)} |`);
}
console.log('(region ends are padded: 0.3 s for Silero turns; the hand-written detector padded 0.15 s and grew regions over');
console.log('sound 3 dB above its noise floor, by up to 0.3 s)');

/** Median wall and CPU (this process, all threads) milliseconds of fn. */
async function timed(fn: () => Promise<unknown> | unknown): Promise<{ wall: number; cpu: number }> {
  await fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    await fn();
    const c = process.cpuUsage(c0);
    wall.push(performance.now() - t0);
    cpu.push((c.user + c.system) / 1000);
  }
  return { wall: median(wall), cpu: median(cpu) };
}

const N = Math.round(MINUTES * 60 * SR);
function clips(): Float32Array {
  const names = ['noise', 'far_field', 'obstructed', 'distortion', 'recording', 'echo', 'dropout', 'mixed'];
  const all = names.map((name) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`))));
  const out = new Float32Array(N);
  for (let at = 0, i = 0; at < N; i++) {
    const clip = all[i % all.length]!;
    out.set(clip.subarray(0, Math.min(clip.length, N - at)), at);
    at += clip.length;
  }
  return out;
}

console.log(`\nCost, ${MINUTES} min of 16 kHz audio, 1 warm-up + ${RUNS} timed runs (median), one thread (CPU: what the`);
console.log('process spent, all threads; wall: elapsed, which on a busy machine is more):');
console.log('| audio        | detectSpeech CPU ms/min | wall ms/min | CPU ms per 32 ms frame | planSegments ms/min | CPU s per hour | regions | segments |');
console.log('|--------------|------------------------:|------------:|-----------------------:|--------------------:|---------------:|--------:|---------:|');
for (const [name, pcm] of [
  ['speech clips', clips()],
  ['white noise', noise('white', N / SR, 0.1, 1)],
  ['silence', new Float32Array(N)],
] as const) {
  const regions = await detect(pcm);
  const segments = planSegments(pcm, regions, { maxSeconds: 15 });
  const d = await timed(() => detect(pcm));
  const detectCpu = d.cpu / MINUTES;
  const planMs = (await timed(() => planSegments(pcm, regions, { maxSeconds: 15 }))).cpu / MINUTES;
  const perFrame = detectCpu / ((60 * SR) / VAD_FRAME_SAMPLES);
  const row = [
    name.padEnd(12),
    detectCpu.toFixed(1).padStart(23),
    (d.wall / MINUTES).toFixed(1).padStart(11),
    perFrame.toFixed(3).padStart(22),
    planMs.toFixed(2).padStart(19),
    (((detectCpu + planMs) * 60) / 1000).toFixed(2).padStart(14),
  ];
  console.log(`| ${row.join(' | ')} | ${String(regions.length).padStart(7)} | ${String(segments.length).padStart(8)} |`);
}
await vad.release();
