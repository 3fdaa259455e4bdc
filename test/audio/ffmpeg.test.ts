import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { CONTAINER_NAMES, decodeWithFfmpeg, decoderCapabilities, type FfmpegDecodeOptions } from '../../src/audio/ffmpeg.js';
import { AudioError } from '../../src/audio/errors.js';
import { repoRoot, sharedPath } from '../support/shared.js';
import { tempDir, transcode, writeTemp } from '../support/transcode.js';
import { encodeWav } from '../support/wav-writer.js';

const dir = tempDir();
afterAll(() => dir.remove());
const clip = sharedPath('fixtures', 'voices-in-the-wild', 'recording.wav');

const options = (o: Partial<FfmpegDecodeOptions> = {}): FfmpegDecodeOptions => ({
  container: 'flac',
  label: 'FLAC',
  maxSeconds: 7200,
  timeoutMs: 30_000,
  check: () => undefined,
  ...o,
});

const tone = (n: number, rate: number, freq: number, amplitude: number) =>
  Float32Array.from({ length: n }, (_, i) => amplitude * Math.sin((2 * Math.PI * freq * i) / rate));

/** Amplitude of the `freq` Hz component of 16 kHz audio (a single DFT bin). */
function amplitudeAt(x: Float32Array, freq: number): number {
  let re = 0;
  let im = 0;
  for (let i = 0; i < x.length; i++) {
    re += x[i]! * Math.cos((2 * Math.PI * freq * i) / 16000);
    im -= x[i]! * Math.sin((2 * Math.PI * freq * i) / 16000);
  }
  return (2 * Math.hypot(re, im)) / x.length;
}

function flacOf(channels: Float32Array[], sampleRate: number, name: string): Uint8Array {
  const wav = writeTemp(dir, `${name}.wav`, encodeWav({ channels, sampleRate, format: 'pcm24' }));
  return transcode(wav, 'flac', dir).bytes;
}

describe('decoderCapabilities', () => {
  it("finds Debian's ffmpeg with soxr and every format this server takes", async () => {
    const caps = await decoderCapabilities();
    expect(caps).toMatchObject({ ffmpeg: true, resampler: 'soxr', missing: [] });
    expect(caps.version).toMatch(/^\d+\.\d+/);
    expect(await decoderCapabilities()).toEqual(caps);
  });

  it('without ffmpeg: names every format it cannot take, refuses them clearly, and still decodes WAV', () => {
    const empty = dir.path('empty-path');
    mkdirSync(empty);
    const mp3 = writeTemp(dir, 'clip.mp3', transcode(clip, 'mp3', dir).bytes);
    const script = `
      import { decodeUpload } from ${JSON.stringify(`${repoRoot}/src/audio/decode.ts`)};
      import { decoderCapabilities } from ${JSON.stringify(`${repoRoot}/src/audio/ffmpeg.ts`)};
      import { readFileSync } from 'node:fs';
      const caps = await decoderCapabilities();
      const wav = await decodeUpload(readFileSync(${JSON.stringify(clip)}), { maxSeconds: 60, timeoutMs: 5000 });
      const mp3 = await decodeUpload(readFileSync(${JSON.stringify(mp3)}), { maxSeconds: 60, timeoutMs: 5000 }).catch((e) => e);
      console.log(JSON.stringify({ caps, wav: wav.length, mp3: { code: mp3.code, message: mp3.message } }));
    `;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: repoRoot,
      env: { PATH: empty, ORT_DISABLE_TELEMETRY: '1' },
      encoding: 'utf8',
    });
    const r = JSON.parse(out) as { caps: { ffmpeg: boolean; missing: string[] }; wav: number; mp3: { code: string; message: string } };
    expect(r.caps.ffmpeg).toBe(false);
    expect(r.caps.missing).toEqual(Object.values(CONTAINER_NAMES));
    expect(r.wav).toBe(80000);
    expect(r.mp3.code).toBe('unsupported_format');
    expect(r.mp3.message).toBe('This server cannot decode MP3 audio: ffmpeg is not installed. WAV (PCM or float) is accepted.');
  });
});

describe('decodeWithFfmpeg', () => {
  it('mono is the plain channel mean, not ffmpeg\'s downmix matrix', async () => {
    const left = tone(16000, 16000, 440, 0.5);
    const pcm = await decodeWithFfmpeg(flacOf([left, new Float32Array(16000)], 16000, 'half'), options());
    // -ac 1 would give 0.5 * sqrt(1/2); the mean of (x, 0) is x / 2.
    expect(amplitudeAt(pcm, 440)).toBeCloseTo(0.25, 3);
  });

  it('resamples with soxr: anti-aliased, and the passband kept', async () => {
    // 1 kHz stays; 12 kHz is above the new Nyquist (8 kHz) and would alias to 4 kHz without a filter.
    const rate = 44100;
    const x = tone(rate * 2, rate, 1000, 0.25).map((v, i) => v + 0.25 * Math.sin((2 * Math.PI * 12000 * i) / rate));
    const pcm = await decodeWithFfmpeg(flacOf([x], rate, 'alias'), options());
    expect(pcm).toHaveLength(32000);
    const inner = pcm.subarray(1000, 31000);
    expect(amplitudeAt(inner, 1000)).toBeCloseTo(0.25, 3);
    expect(amplitudeAt(inner, 4000)).toBeLessThan(0.25 * 1e-4); // below -80 dB
  });

  it('hands the probed stream to check() before decoding, which can refuse it', async () => {
    const seen: unknown[] = [];
    const refuse = new AudioError('too_long', 'refused');
    const flac = transcode(clip, 'flac', dir).bytes;
    const check = (info: unknown) => {
      seen.push(info);
      throw refuse;
    };
    const err = await decodeWithFfmpeg(flac, options({ check })).catch((e: unknown) => e);
    expect(err).toBe(refuse);
    expect(seen).toEqual([{ codec: 'flac', channels: 1, sampleRate: 24000, seconds: 5 }]);
  });

  it('stops at the output cap when the header does not say how long the audio is', async () => {
    const flac = transcode(clip, 'flac', dir).bytes;
    const started = performance.now();
    const err = (await decodeWithFfmpeg(flac, options({ maxSeconds: 1 })).catch((e: unknown) => e)) as AudioError;
    expect(performance.now() - started).toBeLessThan(5000);
    expect(err).toBeInstanceOf(AudioError);
    expect(err.code).toBe('too_long');
    expect(err.message).toBe('The audio is longer than 1 seconds, which is the maximum for this server.');
  });

  it('kills ffmpeg at the time limit', async () => {
    const started = performance.now();
    const err = (await decodeWithFfmpeg(transcode(clip, 'flac', dir).bytes, options({ timeoutMs: 20 })).catch((e: unknown) => e)) as AudioError;
    expect(performance.now() - started).toBeLessThan(2000);
    expect(err.code).toBe('invalid');
    expect(err.message).toBe('Decoding the FLAC file took longer than 0 seconds; it may be damaged.');
  });

  it("reports ffmpeg's first error line, without the demuxer prefix or the temp file's name", async () => {
    const m4a = transcode(clip, 'mp4-not-faststart', dir).bytes.subarray(0, 3000);
    const err = (await decodeWithFfmpeg(m4a, options({ container: 'mp4', label: 'MP4' })).catch((e: unknown) => e)) as AudioError;
    expect(err.code).toBe('invalid');
    expect(err.message).toBe('The file looks like MP4 audio but could not be decoded: moov atom not found.');
  });

  it('forces the sniffed demuxer: bytes that are not that format are refused, never probed as something else', async () => {
    const wav = transcode(clip, 'wav-pcm16', dir).bytes;
    const err = (await decodeWithFfmpeg(wav, options({ container: 'mp3', label: 'MP3' })).catch((e: unknown) => e)) as AudioError;
    expect(err).toBeInstanceOf(AudioError);
    expect(err.code).toBe('invalid');
  });

  it('reads a video file with the audio track only', async () => {
    const pcm = await decodeWithFfmpeg(transcode(clip, 'mp4-video', dir).bytes, options({ container: 'mp4', label: 'MP4' }));
    expect(Math.abs(pcm.length - 80000)).toBeLessThan(1024);
  });

  it('soxr at the same rate is a plain format conversion', async () => {
    const x = tone(1600, 16000, 300, 0.5);
    const pcm = await decodeWithFfmpeg(flacOf([x], 16000, 'same-rate'), options());
    const q = (v: number) => Math.round(v * 8388608) / 8388608 || 0; // the decoder gives +0 where rounding gave -0
    expect(pcm).toEqual(Float32Array.from(x, q));
  });
});
