import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeUpload, type DecodeLimits } from '../../src/audio/decode.js';
import { AudioError, type AudioErrorCode } from '../../src/audio/errors.js';
import { symmetric } from '../../tools/random.js';
import { sharedPath } from '../support/shared.js';
import { allVariants, ffmpeg, silence, tempDir, transcode, VARIANT_NAMES, writeTemp, type Variant } from '../support/transcode.js';
import { encodeWav } from '../support/wav-writer.js';

const LIMITS: DecodeLimits = { maxSeconds: 7200, timeoutMs: 30_000 };
const clip = sharedPath('fixtures', 'voices-in-the-wild', 'recording.wav'); // 5 s, 24 kHz mono 16-bit
const CLIP_RATE = 24000;
const dir = tempDir();
afterAll(() => dir.remove());

const read = (path: string) => new Uint8Array(readFileSync(path));

async function decodeError(bytes: Uint8Array, limits = LIMITS): Promise<AudioError> {
  const err = await decodeUpload(bytes, limits).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AudioError);
  return err as AudioError;
}

/** Signal-to-error ratio (dB) of `got` against `want`, over their common length. */
function snr(want: Float32Array, got: Float32Array): number {
  let signal = 0;
  let error = 0;
  for (let i = 0; i < Math.min(want.length, got.length); i++) {
    signal += want[i]! ** 2;
    error += (want[i]! - got[i]!) ** 2;
  }
  return 10 * Math.log10(signal / error);
}

/** Amplitude of the `freq` Hz component (one DFT bin) of 16 kHz audio. */
function amplitudeAt(x: Float32Array, freq: number, rate = 16000): number {
  let re = 0;
  let im = 0;
  for (let i = 0; i < x.length; i++) {
    const a = (2 * Math.PI * freq * i) / rate;
    re += x[i]! * Math.cos(a);
    im -= x[i]! * Math.sin(a);
  }
  return (2 * Math.hypot(re, im)) / x.length;
}

const tone = (n: number, rate: number, freq: number, amplitude: number) =>
  Float32Array.from({ length: n }, (_, i) => amplitude * Math.sin((2 * Math.PI * freq * i) / rate));

/** Cross-path tolerance: WAV uses the JS windowed-sinc resampler, ffmpeg uses soxr; measured 59.7-59.9 dB from 24, 44.1 and 48 kHz. */
const CROSS_PATH_SNR_DB = 50;
/** Lossy codecs whose container signals the encoder delay come back aligned: measured 9.9 dB (Opus 32k) and up. */
const ALIGNED_LOSSY_SNR_DB = 6;
const UNSIGNALLED_DELAY = new Set(['aac-adts', 'mpeg-ts-video', 'avi-video', 'mpeg-ps-video', 'mpga', 'wav-adpcm']);

describe('equivalence: one recording in every format', () => {
  let reference: Float32Array;
  let variants: Variant[];
  beforeAll(async () => {
    reference = await decodeUpload(read(clip), LIMITS);
    variants = allVariants(clip, dir);
  });

  it('the reference is 5 s at 16 kHz', () => {
    expect(reference.length).toBe(80000);
  });

  it.each(VARIANT_NAMES.filter((n) => !n.startsWith('amr')))(
    '%s: the same duration within one codec frame, and the same sound',
    async (name) => {
      const v = variants.find((x) => x.name === name)!;
      const pcm = await decodeUpload(v.bytes, LIMITS);
      expect(Math.abs(pcm.length - reference.length)).toBeLessThanOrEqual(Math.ceil((v.slack * 16000) / CLIP_RATE));
      if (v.lossless) expect(snr(reference, pcm)).toBeGreaterThan(CROSS_PATH_SNR_DB);
      else if (!UNSIGNALLED_DELAY.has(name)) expect(snr(reference, pcm)).toBeGreaterThan(ALIGNED_LOSSY_SNR_DB);
    },
  );

  it('AMR-NB and AMR-WB (hand-made frames) decode to exactly 50 frames per second', async () => {
    for (const name of ['amr-nb', 'amr-wb']) {
      const pcm = await decodeUpload(variants.find((v) => v.name === name)!.bytes, LIMITS);
      expect(pcm.length).toBe(32000);
      expect(Math.max(...pcm.map(Math.abs))).toBeGreaterThan(0.01);
    }
  });

  it('lossless formats at 16 kHz give bit-identical samples, in-process and through ffmpeg', async () => {
    const src16 = dir.path('clip16.wav');
    ffmpeg('-i', clip, '-ar', '16000', '-c:a', 'pcm_s16le', src16);
    const want = await decodeUpload(read(src16), LIMITS);
    expect(want.length).toBe(80000);
    for (const name of ['wav-pcm24', 'wav-float32', 'wav-rf64', 'flac', 'aiff', 'caf', 'mkv-flac', 'ogg-flac']) {
      const got = await decodeUpload(transcode(src16, name, dir).bytes, LIMITS);
      expect(got, name).toEqual(want);
    }
  });

  it('stereo becomes the channel mean on both paths', async () => {
    const l = tone(32000, 16000, 440, 0.5);
    const r = tone(32000, 16000, 1000, 0.25);
    const wav = encodeWav({ channels: [l, r], sampleRate: 16000, format: 'pcm16' });
    const flac = dir.path('stereo.flac');
    ffmpeg('-i', writeTemp(dir, 'stereo.wav', wav), '-c:a', 'flac', flac);
    const q = (x: number) => Math.round(x * 32768) / 32768;
    const mean = Float32Array.from(l, (x, i) => (q(x) + q(r[i]!)) / 2);
    for (const bytes of [wav, read(flac)]) {
      const got = await decodeUpload(bytes, LIMITS);
      expect(got).toHaveLength(32000);
      expect(got.reduce((m, x, i) => Math.max(m, Math.abs(x - mean[i]!)), 0)).toBeLessThan(1e-7);
    }
  });

  it('44.1 and 48 kHz stereo: the two resamplers agree', async () => {
    for (const rate of [44100, 48000]) {
      const wav = await decodeUpload(transcode(clip, 'wav-pcm16', dir, { rate, channels: 2 }).bytes, LIMITS);
      const flac = await decodeUpload(transcode(clip, 'flac', dir, { rate, channels: 2 }).bytes, LIMITS);
      expect(wav.length).toBe(80000);
      expect(flac.length).toBe(80000);
      expect(snr(wav, flac)).toBeGreaterThan(CROSS_PATH_SNR_DB);
    }
  });
});

/** fmt body at 20 (tag 20, channels 22, rate 24, align 32, bits 34), data size at 40, samples from 44. */
function wav16(seconds: number, rate = 16000, channels = 1): Uint8Array {
  const n = Math.round(seconds * rate);
  const rand = symmetric(5);
  const chans = Array.from({ length: channels }, () => Float32Array.from({ length: n }, () => rand() * 0.5));
  return encodeWav({ channels: chans, sampleRate: rate, format: 'pcm16' });
}

function patch(bytes: Uint8Array, edit: (v: DataView) => void): Uint8Array {
  const copy = bytes.slice();
  edit(new DataView(copy.buffer));
  return copy;
}

describe('hostile and broken input: an AudioError with a useful code and message, in bounded time', () => {
  const text = (s: string) => new TextEncoder().encode(s);
  const floatWav = (bad: number) => {
    const x = tone(16000, 16000, 440, 0.5);
    x[1234] = bad;
    return encodeWav({ channels: [x], sampleRate: 16000, format: 'float32' });
  };
  const rand = symmetric(9);
  const cases: [string, () => Uint8Array, AudioErrorCode, RegExp, DecodeLimits?][] = [
    ['an empty file', () => new Uint8Array(0), 'too_short', /empty/],
    ['3 bytes', () => text('RIF'), 'invalid', /only 3 bytes/],
    ['a truncated WAV header', () => read(clip).subarray(0, 40), 'invalid', /no 'data' chunk/],
    ['a truncated FLAC header', () => transcode(clip, 'flac', dir).bytes.subarray(0, 60), 'invalid', /FLAC audio but could not be decoded/],
    ['a truncated MP4 (moov at the end, cut off)', () => transcode(clip, 'mp4-not-faststart', dir).bytes.subarray(0, 4000), 'invalid', /moov atom not found/],
    ['a header claiming 4 GB of data, with none', () => patch(wav16(0), (v) => (v.setUint32(4, 0xffffffff, true), v.setUint32(40, 0xffffffff, true))), 'too_short', /0\.000 s/],
    ['0 channels', () => patch(wav16(1), (v) => v.setUint16(22, 0, true)), 'invalid', /0 channels/],
    ['a 0 Hz rate', () => patch(wav16(1), (v) => v.setUint32(24, 0, true)), 'invalid', /sample rate of 0 Hz/],
    ['a 1 kHz rate', () => wav16(1, 1000), 'invalid', /1000 Hz; rates from 4000 to 192000 Hz/],
    ['a 384 kHz rate', () => wav16(0.2, 384000), 'invalid', /384000 Hz; rates from 4000 to 192000 Hz/],
    ['a 2 MHz rate', () => patch(wav16(1), (v) => v.setUint32(24, 2_000_000, true)), 'invalid', /2000000 Hz/],
    ['64 channels', () => wav16(0.2, 16000, 64), 'invalid', /64 channels; at most 32/],
    ['random bytes', () => Uint8Array.from({ length: 100_000 }, () => Math.floor((rand() + 1) * 128)), 'unsupported_format', /not recognised as audio\. Supported formats: flac, m4a, mp3/],
    ['a PNG image', () => new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...new Uint8Array(200)]), 'unsupported_format', /looks like a PNG image, not audio/],
    ['a PDF', () => text(`%PDF-1.4\n${'1 0 obj << >> endobj\n'.repeat(20)}`), 'unsupported_format', /looks like a PDF document, not audio/],
    ['NaN float samples', () => floatWav(NaN), 'invalid', /NaN or infinite/],
    ['infinite float samples', () => floatWav(-Infinity), 'invalid', /NaN or infinite/],
    ['NaN in a float CAF (through ffmpeg)', () => transcode(writeTemp(dir, 'nan.wav', floatWav(NaN)), 'caf', dir).bytes, 'invalid', /NaN or infinite/],
    ['a video without an audio track', () => (ffmpeg('-f', 'lavfi', '-i', 'color=c=red:s=32x32:r=5', '-t', '1', '-c:v', 'mpeg4', dir.path('mute.mp4')), read(dir.path('mute.mp4'))), 'invalid', /has no audio track/],
    ['0.05 s of WAV', () => wav16(0.05), 'too_short', /too short \(0\.050 s\)\. Minimum audio length is 0\.1 seconds/],
    ['0.05 s of FLAC', () => transcode(writeTemp(dir, 'short.wav', wav16(0.05)), 'flac', dir).bytes, 'too_short', /too short/],
    ['a WAV longer than the limit (from its header)', () => wav16(5), 'too_long', /Audio duration 5\.00 seconds is longer than 2 seconds/, { maxSeconds: 2, timeoutMs: 30_000 }],
    ['an MP3 longer than the limit (from its header)', () => transcode(clip, 'mp3', dir).bytes, 'too_long', /Audio duration 5\.\d+ seconds is longer than 2 seconds/, { maxSeconds: 2, timeoutMs: 30_000 }],
    ['a decode that takes too long', () => transcode(clip, 'ogg-opus', dir).bytes, 'invalid', /took longer than 0 seconds/, { maxSeconds: 7200, timeoutMs: 1 }],
  ];
  const messages: string[] = [];
  afterAll(() => {
    // Nothing about the server's files or code reaches the client.
    for (const m of messages) expect(m).not.toMatch(/\/tmp|mega-asr-decode|upload:|\n\s+at |\.ts:\d/);
  });

  it.each(cases)('%s', async (_name, make, code, message, limits) => {
    const bytes = make();
    const started = performance.now();
    const err = await decodeError(bytes, limits);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
    messages.push(err.message);
  });

  it('decompression bombs (3 h of silence in 2 MB of FLAC or 11 MB of MP3) are refused from the header, at once', async () => {
    for (const format of ['flac', 'mp3'] as const) {
      const bytes = silence(dir, 10800, format);
      expect(bytes.length).toBeLessThan(25 * 1024 * 1024);
      const started = performance.now();
      const err = await decodeError(bytes);
      expect(performance.now() - started).toBeLessThan(3000);
      expect(err.code).toBe('too_long');
      expect(err.message).toMatch(/Audio duration 1080\d\.\d\d seconds is longer than 7200 seconds, which is the maximum/);
    }
  });

  it('a live WebM stream with no duration in its header stops decoding at the limit', async () => {
    const bytes = silence(dir, 600, 'webm-live');
    const started = performance.now();
    const err = await decodeError(bytes, { maxSeconds: 30, timeoutMs: 30_000 });
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(err.code).toBe('too_long');
    expect(err.message).toMatch(/longer than 30 seconds, which is the maximum/);
  });
});

describe('unusual but valid input decodes correctly', () => {
  it('32 channels: the mean of all of them, in-process and through ffmpeg', async () => {
    const n = 8000;
    const channels = Array.from({ length: 32 }, (_, c) => (c % 2 === 0 ? tone(n, 16000, 440, 0.5) : new Float32Array(n)));
    const wav = encodeWav({ channels, sampleRate: 16000, format: 'pcm16' });
    const mulaw = transcode(writeTemp(dir, 'c32.wav', wav), 'wav-mulaw', dir).bytes;
    for (const bytes of [wav, mulaw]) {
      const pcm = await decodeUpload(bytes, LIMITS);
      expect(pcm).toHaveLength(n);
      expect(amplitudeAt(pcm, 440)).toBeCloseTo(0.25, 2);
    }
  });

  it('4 kHz and 192 kHz sample rates, the ends of the accepted range', async () => {
    const low = await decodeUpload(encodeWav({ channels: [tone(8000, 4000, 200, 0.5)], sampleRate: 4000, format: 'pcm16' }), LIMITS);
    expect(low).toHaveLength(32000);
    expect(amplitudeAt(low.subarray(1000, 31000), 200)).toBeCloseTo(0.5, 2);
    const high = await decodeUpload(encodeWav({ channels: [tone(192000, 192000, 440, 0.5)], sampleRate: 192000, format: 'pcm24' }), LIMITS);
    expect(high).toHaveLength(16000);
    expect(amplitudeAt(high.subarray(1000, 15000), 440)).toBeCloseTo(0.5, 2);
  });

  it('a data size of 0xFFFFFFFF (streaming writers) decodes the samples present', async () => {
    const bytes = patch(wav16(1), (v) => (v.setUint32(4, 0xffffffff, true), v.setUint32(40, 0xffffffff, true)));
    expect(await decodeUpload(bytes, LIMITS)).toHaveLength(16000);
  });

  it('float audio beyond [-1, 1] from ffmpeg is peak-normalised, like the WAV path', async () => {
    const loud = encodeWav({ channels: [tone(16000, 16000, 440, 4)], sampleRate: 16000, format: 'float32' });
    const caf = transcode(writeTemp(dir, 'loud.wav', loud), 'caf', dir).bytes;
    const fromWav = await decodeUpload(loud, LIMITS);
    const fromCaf = await decodeUpload(caf, LIMITS);
    expect(Math.max(...fromWav.map(Math.abs))).toBeCloseTo(1, 6);
    expect(Math.max(...fromCaf.map(Math.abs))).toBeCloseTo(1, 6);
  });
});

describe('temp files', () => {
  it('are private and always removed, on success, failure and timeout', async () => {
    const own = mkdtempSync(join(tmpdir(), 'mega-asr-tmpdir-'));
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = own;
    try {
      const flac = transcode(clip, 'flac', dir).bytes;
      await decodeUpload(flac, LIMITS);
      await decodeError(flac.subarray(0, 100));
      await decodeError(flac, { maxSeconds: 7200, timeoutMs: 1 });
      expect(readdirSync(own)).toEqual([]);
    } finally {
      process.env.TMPDIR = saved;
      rmSync(own, { recursive: true, force: true });
    }
  });
});
