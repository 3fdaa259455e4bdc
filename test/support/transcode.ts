import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mulberry32 } from '../../tools/random.js';

/**
 * Audio variants made at test time with the ffmpeg CLI, in a temp dir: nothing transcoded is committed.
 * AMR has no encoder in Debian's ffmpeg, so AMR files are built by hand (valid frames with random parameters).
 */

/** Runs the ffmpeg CLI (errors only, overwriting). */
export function ffmpeg(...args: string[]): void {
  execFileSync('ffmpeg', ['-nostdin', '-hide_banner', '-loglevel', 'error', '-y', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export interface TempDir {
  dir: string;
  path(name: string): string;
  remove(): void;
}

export function tempDir(prefix = 'mega-asr-test-'): TempDir {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Variant {
  name: string;
  bytes: Uint8Array;
  /** decodes to exactly the same samples as the source WAV when the source is 16 kHz mono */
  lossless: boolean;
  /**
   * How far (in source-rate samples) the decoded length may be from the source's: one codec frame, plus the
   * encoder delay where the container cannot signal it (raw ADTS, MPEG-TS, AVI, MPEG-PS).
   */
  slack: number;
}

interface Recipe {
  name: string;
  ext: string;
  /** ffmpeg arguments between the input and the output file */
  args: string[];
  lossless?: boolean;
  slack: number;
  /** a video track from the lavfi colour source, muxed with the audio */
  video?: string;
}

const AAC = 1024;
const AAC_UNSIGNALLED = AAC + 1024;
const MP3 = 1152;
const MP3_UNSIGNALLED = MP3 + 1105;
const OPUS = 960 * 2; // one 20 ms frame at 48 kHz, with room for the pre-skip rounding at the source rate
const VORBIS = 2048;

const RECIPES: Recipe[] = [
  { name: 'wav-pcm16', ext: 'wav', args: ['-c:a', 'pcm_s16le'], lossless: true, slack: 0 },
  { name: 'wav-pcm24', ext: 'wav', args: ['-c:a', 'pcm_s24le'], lossless: true, slack: 0 },
  { name: 'wav-float32', ext: 'wav', args: ['-c:a', 'pcm_f32le'], lossless: true, slack: 0 },
  { name: 'wav-pcm8', ext: 'wav', args: ['-c:a', 'pcm_u8'], slack: 0 },
  { name: 'wav-rf64', ext: 'wav', args: ['-c:a', 'pcm_s16le', '-rf64', 'always'], lossless: true, slack: 0 },
  { name: 'wav-mulaw', ext: 'wav', args: ['-c:a', 'pcm_mulaw'], slack: 0 },
  { name: 'wav-adpcm', ext: 'wav', args: ['-c:a', 'adpcm_ms'], slack: 512 },
  { name: 'flac', ext: 'flac', args: ['-c:a', 'flac'], lossless: true, slack: 0 },
  { name: 'aiff', ext: 'aiff', args: ['-c:a', 'pcm_s16be'], lossless: true, slack: 0 },
  // float, so NaN and samples beyond [-1, 1] can reach the ffmpeg path
  { name: 'caf', ext: 'caf', args: ['-c:a', 'pcm_f32le'], lossless: true, slack: 0 },
  { name: 'mkv-flac', ext: 'mkv', args: ['-c:a', 'flac'], lossless: true, slack: 0 },
  { name: 'ogg-flac', ext: 'oga', args: ['-c:a', 'flac', '-f', 'ogg'], lossless: true, slack: 0 },
  { name: 'mp3', ext: 'mp3', args: ['-c:a', 'libmp3lame', '-b:a', '64k'], slack: MP3 },
  { name: 'mpga', ext: 'mpga', args: ['-c:a', 'mp2', '-b:a', '64k', '-f', 'mp2'], slack: MP3 },
  { name: 'm4a', ext: 'm4a', args: ['-c:a', 'aac', '-b:a', '64k', '-movflags', '+faststart'], slack: AAC },
  { name: 'mp4-not-faststart', ext: 'mp4', args: ['-c:a', 'aac', '-b:a', '64k'], slack: AAC },
  { name: 'mp4-video', ext: 'mp4', args: ['-c:v', 'mpeg4', '-c:a', 'aac', '-shortest'], slack: AAC, video: 'color=c=blue:s=64x64:r=10' },
  { name: '3gp', ext: '3gp', args: ['-c:a', 'aac', '-b:a', '32k'], slack: AAC },
  { name: 'aac-adts', ext: 'aac', args: ['-c:a', 'aac', '-b:a', '64k', '-f', 'adts'], slack: AAC_UNSIGNALLED },
  { name: 'ogg-vorbis', ext: 'ogg', args: ['-c:a', 'libvorbis'], slack: VORBIS },
  { name: 'ogg-opus', ext: 'opus', args: ['-c:a', 'libopus', '-b:a', '32k'], slack: OPUS },
  { name: 'webm-opus', ext: 'webm', args: ['-c:a', 'libopus', '-b:a', '32k'], slack: OPUS },
  { name: 'mpeg-ps-video', ext: 'mpeg', args: ['-c:v', 'mpeg1video', '-c:a', 'mp2', '-shortest', '-f', 'mpeg'], slack: MP3, video: 'color=c=blue:s=64x64:r=25' },
  { name: 'mpeg-ts-video', ext: 'ts', args: ['-c:v', 'mpeg2video', '-c:a', 'aac', '-shortest', '-f', 'mpegts'], slack: AAC_UNSIGNALLED, video: 'color=c=blue:s=64x64:r=25' },
  { name: 'avi-video', ext: 'avi', args: ['-c:v', 'mpeg4', '-c:a', 'libmp3lame', '-shortest'], slack: MP3_UNSIGNALLED, video: 'color=c=blue:s=64x64:r=25' },
];

export const VARIANT_NAMES = [...RECIPES.map((r) => r.name), 'amr-nb', 'amr-wb'];

/** One variant of `source` (any file ffmpeg reads) by name; `rate`/`channels` re-shape the audio first. */
export function transcode(source: string, name: string, dir: TempDir, shape: { rate?: number; channels?: number } = {}): Variant {
  const recipe = RECIPES.find((r) => r.name === name);
  if (!recipe) throw new Error(`no recipe for ${name}`);
  const out = dir.path(`${name}-${shape.rate ?? 'src'}-${shape.channels ?? 'src'}.${recipe.ext}`);
  const shapeArgs = [...(shape.rate ? ['-ar', String(shape.rate)] : []), ...(shape.channels ? ['-ac', String(shape.channels)] : [])];
  if (recipe.video) {
    ffmpeg('-f', 'lavfi', '-i', recipe.video, '-i', source, '-map', '0:v', '-map', '1:a', ...shapeArgs, ...recipe.args, out);
  } else {
    ffmpeg('-i', source, '-map', '0:a', ...shapeArgs, ...recipe.args, out);
  }
  return { name, bytes: new Uint8Array(readFileSync(out)), lossless: recipe.lossless ?? false, slack: recipe.slack };
}

/** Every variant of `source`, AMR included (built by hand at 8/16 kHz, so of `amrSeconds`, not of the source). */
export function allVariants(source: string, dir: TempDir, amrSeconds = 2): Variant[] {
  return [
    ...RECIPES.map((r) => transcode(source, r.name, dir)),
    { name: 'amr-nb', bytes: amrFile('nb', amrSeconds), lossless: false, slack: 0 },
    { name: 'amr-wb', bytes: amrFile('wb', amrSeconds), lossless: false, slack: 0 },
  ];
}

/**
 * An AMR file (RFC 4867 storage format) of 20 ms frames in the highest mode (12.2 kbit/s NB: 31-byte payload;
 * 23.85 kbit/s WB: 60 bytes) with random parameters: any bit pattern is a valid frame, so it decodes to
 * exactly seconds * 50 frames of (noise-like) sound.
 */
function amrFile(kind: 'nb' | 'wb', seconds: number, seed = 1): Uint8Array {
  const [magic, header, payload] = kind === 'nb' ? ['#!AMR\n', 0x3c, 31] : ['#!AMR-WB\n', 0x44, 60];
  const frames = Math.round(seconds * 50);
  const rand = mulberry32(seed);
  const out = new Uint8Array(magic.length + frames * (1 + payload));
  out.set(new TextEncoder().encode(magic));
  for (let f = 0, p = magic.length; f < frames; f++) {
    out[p++] = header;
    for (let i = 0; i < payload; i++) out[p++] = Math.floor(rand() * 256);
  }
  return out;
}

/** Writes bytes to a file in `dir` (for ffmpeg to read). */
export function writeTemp(dir: TempDir, name: string, bytes: Uint8Array): string {
  const p = dir.path(name);
  writeFileSync(p, bytes);
  return p;
}

/** A long stream of silence in a compact format: a "decompression bomb" that decodes to hours of audio. */
export function silence(dir: TempDir, seconds: number, format: 'flac' | 'mp3' | 'webm-live'): Uint8Array {
  const src = ['-f', 'lavfi', '-i', `anullsrc=r=8000:cl=mono`, '-t', String(seconds)];
  if (format === 'flac') ffmpeg(...src, '-c:a', 'flac', dir.path('silence.flac'));
  else if (format === 'mp3') ffmpeg(...src, '-c:a', 'libmp3lame', '-b:a', '8k', dir.path('silence.mp3'));
  else {
    // Written to a pipe, as a browser's MediaRecorder streams it: no duration in the header, no cues.
    const bytes = execFileSync('ffmpeg', ['-nostdin', '-loglevel', 'error', ...src, '-c:a', 'libopus', '-b:a', '6k', '-f', 'webm', 'pipe:1'], {
      maxBuffer: 256 * 1024 * 1024,
    });
    return new Uint8Array(bytes);
  }
  return new Uint8Array(readFileSync(dir.path(format === 'flac' ? 'silence.flac' : 'silence.mp3')));
}
