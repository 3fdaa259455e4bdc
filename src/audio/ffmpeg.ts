import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AudioError } from './errors.js';
import { SAMPLE_RATE } from './pcm.js';
import type { AudioContainer } from './sniff.js';

/**
 * Decoding through an ffmpeg subprocess, for everything but plain PCM/float WAV. The upload goes to a private
 * temp file (MP4 without faststart needs seeking), ffmpeg reads it with the demuxer forced from the sniffed
 * container and only the file protocol, and writes 16 kHz mono float32 to a pipe under a time limit and an
 * output cap.
 */

/** The ffmpeg demuxer for each sniffed container: never probed, so no playlist/concat demuxer can open other files. */
const DEMUXERS: Record<AudioContainer, string> = {
  wav: 'wav',
  flac: 'flac',
  mp3: 'mp3',
  aac: 'aac',
  ogg: 'ogg',
  matroska: 'matroska',
  mp4: 'mov',
  amr: 'amr',
  aiff: 'aiff',
  caf: 'caf',
  'mpeg-ps': 'mpeg',
  'mpeg-ts': 'mpegts',
  avi: 'avi',
};

/** Codecs a container usually holds, checked at startup; what a file really holds is checked once probed. */
const EXPECTED_CODECS: Record<AudioContainer, string[]> = {
  wav: ['pcm_mulaw', 'pcm_alaw', 'adpcm_ms'],
  flac: ['flac'],
  mp3: ['mp3', 'mp2'],
  aac: ['aac'],
  ogg: ['opus', 'vorbis', 'flac'],
  matroska: ['opus', 'vorbis'],
  mp4: ['aac'],
  amr: ['amr_nb', 'amr_wb'],
  aiff: ['pcm_s16be'],
  caf: ['pcm_s16be'],
  'mpeg-ps': ['mp2'],
  'mpeg-ts': ['aac', 'mp2'],
  avi: ['mp3'],
};

/** How the startup report and the errors name each container. */
export const CONTAINER_NAMES: Record<AudioContainer, string> = {
  wav: 'WAV with compressed codecs (mu-law, A-law, ADPCM)',
  flac: 'FLAC',
  mp3: 'MP3/MP2 (mpeg, mpga)',
  aac: 'AAC (ADTS)',
  ogg: 'Ogg (Opus, Vorbis, FLAC)',
  matroska: 'WebM/Matroska',
  mp4: 'MP4/M4A/MOV/3GP',
  amr: 'AMR',
  aiff: 'AIFF',
  caf: 'CAF',
  'mpeg-ps': 'MPEG-PS',
  'mpeg-ts': 'MPEG-TS',
  avi: 'AVI',
};

export interface DecoderCapabilities {
  /** ffmpeg and ffprobe both run */
  ffmpeg: boolean;
  version?: string;
  /** soxr when ffmpeg is built with libsoxr; otherwise swresample's own filter, widened */
  resampler: 'soxr' | 'swr';
  /** CONTAINER_NAMES of what this server cannot decode; empty when nothing is missing */
  missing: string[];
}

interface Capabilities extends DecoderCapabilities {
  demuxers: Set<string>;
  /** codec names (not decoder names) that have a decoder */
  codecs: Set<string>;
}

/** The only variables ffmpeg sees: FFREPORT and the like could make it write files. */
const childEnv = () => ({ PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin' });

interface ToolResult {
  code: number | null;
  /** as it arrived: one copy less than concatenating when it is hundreds of megabytes of PCM */
  stdout: Buffer[];
  stdoutBytes: number;
  stderr: string;
  /** why it was killed, if it was */
  killed?: 'timeout' | 'output';
}

const STDERR_CAP = 8 * 1024;

const text = (r: ToolResult) => Buffer.concat(r.stdout).toString();

/**
 * Runs a tool with no stdin, stderr kept up to STDERR_CAP, killed with SIGKILL at `deadline` (epoch ms) or once
 * stdout passes `stdoutCap` bytes. Rejects only when the program cannot be started (ENOENT...).
 */
function runTool(cmd: string, args: string[], o: { cwd?: string; deadline: number; stdoutCap: number }): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    let killed: ToolResult['killed'];
    const kill = (why: NonNullable<ToolResult['killed']>) => {
      killed ??= why;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => kill('timeout'), Math.max(0, o.deadline - Date.now()));
    child.stdout.on('data', (chunk: Buffer) => {
      if (killed) return;
      size += chunk.length;
      if (size > o.stdoutCap) kill('output');
      else chunks.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      if (stderr.length < STDERR_CAP) stderr += s.slice(0, STDERR_CAP - stderr.length);
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: chunks, stdoutBytes: size, stderr, ...(killed ? { killed } : {}) });
    });
  });
}

const CAPABILITY_TIMEOUT_MS = 10_000;

async function probeCapabilities(): Promise<Capabilities> {
  const deadline = Date.now() + CAPABILITY_TIMEOUT_MS;
  const run = (cmd: string, ...args: string[]) => runTool(cmd, args, { deadline, stdoutCap: 4 * 1024 * 1024 }).catch(() => undefined);
  const [version, probe, demuxerList, decoderList] = await Promise.all([
    run('ffmpeg', '-version'),
    run('ffprobe', '-version'),
    run('ffmpeg', '-hide_banner', '-demuxers'),
    run('ffmpeg', '-hide_banner', '-decoders'),
  ]);
  const ok = (r: ToolResult | undefined): r is ToolResult => r?.code === 0;
  const demuxers = new Set<string>();
  const codecs = new Set<string>();
  if (ok(demuxerList)) {
    for (const m of text(demuxerList).matchAll(/^ D[E ] (\S+)/gm)) for (const name of m[1]!.split(',')) demuxers.add(name);
  }
  if (ok(decoderList)) {
    // " A....D mp3float   MP3 (MPEG audio layer 3) (codec mp3)": the codec is the name unless a "(codec x)" says otherwise.
    for (const m of text(decoderList).matchAll(/^ A\S{5} (\S+) +(.*)$/gm)) {
      codecs.add(/\(codec (\S+)\)\s*$/.exec(m[2]!)?.[1] ?? m[1]!);
    }
  }
  const ffmpeg = ok(version) && ok(probe) && demuxers.size > 0;
  const versionText = ok(version) ? text(version) : '';
  const missing = (Object.keys(DEMUXERS) as AudioContainer[])
    .filter((c) => !ffmpeg || !demuxers.has(DEMUXERS[c]) || !EXPECTED_CODECS[c].every((codec) => codecs.has(codec)))
    .map((c) => CONTAINER_NAMES[c]);
  const versionNumber = /^ffmpeg version (\S+)/.exec(versionText)?.[1];
  // A machine too busy to answer in time has said nothing about ffmpeg: ask again next time.
  if ([version, probe, demuxerList, decoderList].some((r) => r?.killed === 'timeout')) capabilities = undefined;
  return {
    ffmpeg,
    ...(versionNumber ? { version: versionNumber } : {}),
    resampler: versionText.includes('--enable-libsoxr') ? 'soxr' : 'swr',
    missing,
    demuxers,
    codecs,
  };
}

let capabilities: Promise<Capabilities> | undefined;

/** What this process's ffmpeg can decode; asked once per process (thread) and cached. */
export async function decoderCapabilities(): Promise<DecoderCapabilities> {
  const { ffmpeg, version, resampler, missing } = await allCapabilities();
  return { ffmpeg, ...(version ? { version } : {}), resampler, missing };
}

function allCapabilities(): Promise<Capabilities> {
  capabilities ??= probeCapabilities();
  return capabilities;
}

export interface StreamInfo {
  codec: string;
  channels: number;
  sampleRate: number;
  /** from the container header; absent when it does not say (e.g. a live WebM recording) */
  seconds?: number;
}

export interface FfmpegDecodeOptions {
  container: AudioContainer;
  /** the sniffed format, for messages ("MP3", "Ogg Opus") */
  label: string;
  maxSeconds: number;
  timeoutMs: number;
  /** called with the probed stream before decoding; throws to refuse it (duration, channels, rate) */
  check: (info: StreamInfo) => void;
}

const unsupported = (message: string) => new AudioError('unsupported_format', message);

/** The first ffmpeg error line, without the "[demuxer @ 0x...]" prefix or the temp file's name. */
function ffmpegMessage(stderr: string): string {
  const line = stderr
    .split('\n')
    .map((l) => l.replace(/^\[[^\]]*@ 0x[0-9a-f]+\]\s*/i, '').replace(/\bupload:\s*/g, '').trim())
    .find((l) => l.length > 0);
  return line ? line.replace(/\.$/, '').slice(0, 200) : 'ffmpeg reported no reason';
}

const INPUT = 'upload';
/** With -t, ffmpeg ends by itself just past the limit; the output cap kills it as soon as the limit is passed. */
const T_MARGIN_SECONDS = 1;

/**
 * Decodes `bytes` (sniffed as `container`) to 16 kHz mono float32 PCM: the channel mean, resampled by soxr.
 * Refusals are AudioErrors whose messages never contain paths.
 */
export async function decodeWithFfmpeg(bytes: Uint8Array, o: FfmpegDecodeOptions): Promise<Float32Array> {
  const caps = await allCapabilities();
  const demuxer = DEMUXERS[o.container];
  if (!caps.ffmpeg) {
    throw unsupported(`This server cannot decode ${o.label} audio: ffmpeg is not installed. WAV (PCM or float) is accepted.`);
  }
  if (!caps.demuxers.has(demuxer)) throw unsupported(`This server cannot decode ${o.label} audio: its ffmpeg has no '${demuxer}' demuxer.`);

  const deadline = Date.now() + o.timeoutMs;
  const dir = await mkdtemp(join(tmpdir(), 'mega-asr-decode-'));
  try {
    await writeFile(join(dir, INPUT), bytes, { mode: 0o600, flag: 'wx' });
    const info = await probe(dir, demuxer, deadline, o);
    if (!caps.codecs.has(info.codec)) {
      throw unsupported(`This server cannot decode ${o.label} audio coded as '${info.codec}': its ffmpeg has no decoder for it.`);
    }
    o.check(info);
    return await transcode(dir, demuxer, info, caps.resampler, deadline, o);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const timedOut = (o: FfmpegDecodeOptions) =>
  new AudioError('invalid', `Decoding the ${o.label} file took longer than ${Math.round(o.timeoutMs / 1000)} seconds; it may be damaged.`);

const undecodable = (o: FfmpegDecodeOptions, stderr: string) =>
  new AudioError('invalid', `The file looks like ${o.label} audio but could not be decoded: ${ffmpegMessage(stderr)}.`);

async function probe(dir: string, demuxer: string, deadline: number, o: FfmpegDecodeOptions): Promise<StreamInfo> {
  const args = ['-v', 'error', '-protocol_whitelist', 'file', '-f', demuxer, '-select_streams', 'a:0'];
  args.push('-show_entries', 'stream=codec_name,channels,sample_rate:format=duration', '-of', 'json', INPUT);
  const r = await runTool('ffprobe', args, { cwd: dir, deadline, stdoutCap: 1024 * 1024 });
  if (r.killed === 'timeout') throw timedOut(o);
  if (r.code !== 0) throw undecodable(o, r.stderr);
  let parsed: { streams?: { codec_name?: string; channels?: number; sample_rate?: string }[]; format?: { duration?: string } };
  try {
    parsed = JSON.parse(text(r)) as typeof parsed;
  } catch {
    throw undecodable(o, r.stderr);
  }
  const stream = parsed.streams?.[0];
  if (!stream) throw new AudioError('invalid', `The ${o.label} file has no audio track.`);
  const channels = stream.channels ?? 0;
  const sampleRate = Number(stream.sample_rate ?? 0);
  if (!(channels > 0 && sampleRate > 0)) throw new AudioError('invalid', `The ${o.label} file's audio track declares no channels or no sample rate.`);
  const seconds = Number(parsed.format?.duration);
  return { codec: stream.codec_name ?? 'unknown', channels, sampleRate, ...(Number.isFinite(seconds) ? { seconds } : {}) };
}

async function transcode(
  dir: string,
  demuxer: string,
  info: StreamInfo,
  resampler: 'soxr' | 'swr',
  deadline: number,
  o: FfmpegDecodeOptions,
): Promise<Float32Array> {
  // The plain channel mean, as the reference's np.mean (ffmpeg's -ac 1 would apply its downmix matrix), in
  // floating point: on integer samples pan would round the mean to the input's integer steps.
  const gain = String(1 / info.channels);
  const pan = `aformat=sample_fmts=flt|fltp|dbl|dblp,pan=mono|c0=${Array.from({ length: info.channels }, (_, c) => `${gain}*c${c}`).join('+')}`;
  // soxr at its default (20-bit, "HQ") is what the reference's librosa uses; swr's fallback gets a longer filter.
  const resample = resampler === 'soxr' ? 'aresample=16000:resampler=soxr' : 'aresample=16000:filter_size=128:cutoff=0.95';
  const args = ['-nostdin', '-hide_banner', '-loglevel', 'error', '-threads', '1', '-protocol_whitelist', 'file'];
  args.push('-f', demuxer, '-i', INPUT, '-map', '0:a:0', '-vn', '-sn', '-dn', '-af', `${pan},${resample}`);
  args.push('-t', String(o.maxSeconds + T_MARGIN_SECONDS), '-f', 'f32le', 'pipe:1');
  const maxSamples = Math.floor(o.maxSeconds * SAMPLE_RATE);
  const r = await runTool('ffmpeg', args, { cwd: dir, deadline, stdoutCap: maxSamples * 4 });
  if (r.killed === 'timeout') throw timedOut(o);
  if (r.killed === 'output') {
    throw new AudioError('too_long', `The audio is longer than ${o.maxSeconds} seconds, which is the maximum for this server.`);
  }
  if (r.code !== 0 || (r.stdoutBytes < 4 && r.stderr.trim() !== '')) throw undecodable(o, r.stderr);
  // Into a buffer of its own (pipe chunks may sit unaligned in a shared pool), which the worker then transfers.
  const pcm = new Float32Array(Math.floor(r.stdoutBytes / 4));
  const bytes = new Uint8Array(pcm.buffer);
  let offset = 0;
  for (const chunk of r.stdout) {
    const n = Math.min(chunk.length, bytes.length - offset);
    bytes.set(chunk.subarray(0, n), offset);
    offset += n;
  }
  for (let i = 0; i < pcm.length; i++) {
    if (!Number.isFinite(pcm[i]!)) throw new AudioError('invalid', `The ${o.label} audio contains NaN or infinite samples.`);
  }
  return pcm;
}
