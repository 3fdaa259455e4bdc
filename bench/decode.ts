/**
 * Decode + resample time per minute of audio, the work a decode thread does per upload (decodeUpload: sniff,
 * then the in-process WAV decoder and resampler, or ffprobe + ffmpeg with soxr). The inputs are made at run
 * time from one clip repeated to 60 s.
 *
 *   npm run bench:decode            (RUNS=15 npm run bench:decode for more runs; CLIP=noise for another clip)
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeUpload } from '../src/audio/decode.js';
import { decoderCapabilities } from '../src/audio/ffmpeg.js';
import { ffmpeg, tempDir } from '../test/support/transcode.js';
import { median } from './stats.js';

const RUNS = Math.max(1, Number(process.env.RUNS ?? 7));
const SECONDS = 60;
const clip = join(process.env.SHARED_DIR ?? join(import.meta.dirname, '..', '..', 'shared'), 'fixtures', 'voices-in-the-wild', `${process.env.CLIP ?? 'recording'}.wav`);

const FORMATS: { name: string; ext: string; args: string[] }[] = [
  { name: 'WAV 44.1 kHz stereo 16-bit', ext: 'wav', args: ['-ar', '44100', '-ac', '2', '-c:a', 'pcm_s16le'] },
  { name: 'MP3 44.1 kHz stereo 128k', ext: 'mp3', args: ['-ar', '44100', '-ac', '2', '-c:a', 'libmp3lame', '-b:a', '128k'] },
  { name: 'Opus (Ogg) 48 kHz mono 32k', ext: 'opus', args: ['-ar', '48000', '-ac', '1', '-c:a', 'libopus', '-b:a', '32k'] },
];

async function time(bytes: Uint8Array): Promise<number> {
  const limits = { maxSeconds: 7200, timeoutMs: 120_000 };
  await decodeUpload(bytes, limits); // warm-up
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now();
    await decodeUpload(bytes, limits);
    ms.push(performance.now() - started);
  }
  return median(ms);
}

const dir = tempDir('mega-asr-bench-');
try {
  const caps = await decoderCapabilities();
  const long = dir.path('long.wav');
  ffmpeg('-stream_loop', '-1', '-i', clip, '-t', String(SECONDS), long);
  const rows: string[][] = [];
  for (const f of FORMATS) {
    const minute = dir.path(`minute.${f.ext}`);
    const second = dir.path(`second.${f.ext}`);
    ffmpeg('-i', long, ...f.args, minute);
    ffmpeg('-i', long, '-t', '1', ...f.args, second);
    const perMinute = await time(new Uint8Array(readFileSync(minute)));
    const fixed = await time(new Uint8Array(readFileSync(second)));
    const size = readFileSync(minute).length;
    rows.push([f.name, `${(size / 1e6).toFixed(2)} MB`, perMinute.toFixed(1), ((SECONDS * 1000) / perMinute).toFixed(0), fixed.toFixed(1)]);
  }
  console.log(`decode + resample to 16 kHz mono, median of ${RUNS} runs (${process.env.CLIP ?? 'recording'} repeated to ${SECONDS} s; ffmpeg ${caps.version ?? 'missing'}, resampler ${caps.resampler})`);
  const head = ['input', 'size/min', 'ms per minute of audio', 'x real time', 'ms for a 1 s file'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [head, ...rows]) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
} finally {
  dir.remove();
}
