import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { symmetric } from '../../tools/random.js';
import { expectSchema } from '../support/openapi.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { allVariants, ffmpeg, silence, tempDir, transcode, writeTemp, type Variant } from '../support/transcode.js';
import { encodeWav } from '../support/wav-writer.js';

/** Uploads through the real service (Fastify, decode threads, ffmpeg, ASR worker on a generated model). */

const clip = sharedPath('fixtures', 'voices-in-the-wild', 'recording.wav'); // 5 s at 24 kHz
const dir = tempDir();
let server: TestServer;
let variants: Variant[];

beforeAll(async () => {
  variants = allVariants(clip, dir);
  server = await startTestServer();
});
afterAll(async () => {
  await server.stop('test done');
  dir.remove();
});

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** Every upload is named as if it were a WAV: the format must come from the bytes. */
async function upload(bytes: Uint8Array, fields: Record<string, string> = {}): Promise<Response> {
  const form = new FormData();
  form.append('model', 'whisper-1');
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  form.append('file', new Blob([bytes], { type: 'audio/wav' }), 'upload.wav');
  return fetch(`${server.baseURL}/v1/audio/transcriptions`, { method: 'POST', body: form });
}

const speech = readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'echo.wav'));

async function expectServing(): Promise<void> {
  const res = await upload(speech);
  expect(res.status).toBe(200);
  expect(FIXTURE_SENTENCES).toContain(((await res.json()) as { text: string }).text);
  expect((await fetch(`${server.baseURL}/ready`)).status).toBe(200);
}

describe('every format through POST /v1/audio/transcriptions', () => {
  it.each(['flac', 'mp3', 'mpga', 'm4a', 'mp4-not-faststart', 'mp4-video', '3gp', 'aac-adts', 'ogg-vorbis', 'ogg-opus', 'webm-opus', 'ogg-flac', 'mkv-flac', 'aiff', 'caf', 'wav-float32', 'wav-pcm24', 'wav-pcm8', 'wav-rf64', 'wav-mulaw', 'wav-adpcm', 'mpeg-ps-video', 'mpeg-ts-video', 'avi-video', 'amr-nb', 'amr-wb'])(
    '%s: 200 with the duration of the recording',
    async (name) => {
      const v = variants.find((x) => x.name === name)!;
      const res = await upload(v.bytes, { response_format: 'verbose_json' });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { duration: number; text: string };
      expectSchema('CreateTranscriptionResponseVerboseJson', body);
      const seconds = name.startsWith('amr') ? 2 : 5;
      expect(Math.abs(body.duration - seconds)).toBeLessThanOrEqual(v.slack / 24000 + 1e-9);
      // voice activity may cut the recording into segments: each one is a sentence of the generated model
      expect(body.text.length).toBeGreaterThan(0);
      for (const segment of (body as unknown as { segments: { text: string }[] }).segments) expect(FIXTURE_SENTENCES).toContain(segment.text);
    },
  );
});

describe('hostile and broken uploads: a 4xx OpenAI error in bounded time, then the next request is served', () => {
  const text = (s: string) => new TextEncoder().encode(s);
  const wavPatched = (edit: (v: DataView) => void) => {
    const bytes = encodeWav({ channels: [new Float32Array(16000).fill(0.1)], sampleRate: 16000, format: 'pcm16' });
    edit(new DataView(bytes.buffer));
    return bytes;
  };
  const floatWav = (bad: number) => {
    const x = new Float32Array(16000).fill(0.1);
    x[100] = bad;
    return encodeWav({ channels: [x], sampleRate: 16000, format: 'float32' });
  };
  const rand = symmetric(21);
  const cases: [string, () => Uint8Array, number, string, RegExp][] = [
    ['an empty file', () => new Uint8Array(0), 400, 'audio_too_short', /empty/],
    ['3 bytes', () => text('ID3'), 400, 'invalid_audio', /only 3 bytes/],
    ['a truncated header', () => new Uint8Array(readFileSync(clip)).subarray(0, 40), 400, 'invalid_audio', /'data' chunk/],
    ['a truncated MP3', () => transcode(clip, 'mp3', dir).bytes.subarray(0, 300), 400, 'invalid_audio', /MP3 audio but could not be decoded/],
    ['a header claiming 4 GB of data', () => wavPatched((v) => (v.setUint32(4, 0xffffffff, true), v.setUint32(40, 0xffffffff, true))).subarray(0, 48), 400, 'audio_too_short', /too short/],
    ['0 channels', () => wavPatched((v) => v.setUint16(22, 0, true)), 400, 'invalid_audio', /0 channels/],
    ['a 0 Hz rate', () => wavPatched((v) => v.setUint32(24, 0, true)), 400, 'invalid_audio', /0 Hz/],
    ['random bytes', () => Uint8Array.from({ length: 50_000 }, () => Math.floor((rand() + 1) * 128)), 400, 'unsupported_audio_format', /not recognised as audio/],
    ['a PNG image', () => new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...new Uint8Array(500)]), 400, 'unsupported_audio_format', /PNG image, not audio/],
    ['a PDF', () => text(`%PDF-1.5\n${'0 0 obj << >> endobj\n'.repeat(50)}`), 400, 'unsupported_audio_format', /PDF document, not audio/],
    ['3 hours of silence in 2 MB of FLAC', () => silence(dir, 10800, 'flac'), 400, 'invalid_value', /Audio duration 10800\.00 seconds is longer than 7200 seconds/],
    ['3 hours of silence in 11 MB of MP3', () => silence(dir, 10800, 'mp3'), 400, 'invalid_value', /longer than 7200 seconds/],
    ['NaN float samples', () => floatWav(NaN), 400, 'invalid_audio', /NaN or infinite/],
    ['infinite float samples', () => floatWav(Infinity), 400, 'invalid_audio', /NaN or infinite/],
    ['64 channels', () => encodeWav({ channels: Array.from({ length: 64 }, () => new Float32Array(1600)), sampleRate: 16000, format: 'pcm16' }), 400, 'invalid_audio', /64 channels/],
    ['a 1 kHz rate', () => encodeWav({ channels: [new Float32Array(1000)], sampleRate: 1000, format: 'pcm16' }), 400, 'invalid_audio', /1000 Hz/],
    ['a 384 kHz rate', () => encodeWav({ channels: [new Float32Array(384000)], sampleRate: 384000, format: 'pcm16' }), 400, 'invalid_audio', /384000 Hz/],
    ['26 MB', () => new Uint8Array(26 * 1024 * 1024), 413, 'file_too_large', /Maximum content size limit \(26214400\) exceeded/],
  ];

  it.each(cases)('%s', async (_name, make, status, code, message) => {
    const bytes = make();
    const started = performance.now();
    const res = await upload(bytes);
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(res.status).toBe(status);
    const body = (await res.json()) as ErrorBody;
    expectSchema('ErrorResponse', body);
    expect(body.error).toMatchObject({ type: 'invalid_request_error', code, param: 'file' });
    expect(body.error.message).toMatch(message);
    expect(body.error.message).not.toMatch(/\/tmp|mega-asr-decode|\n\s+at /);
    await expectServing();
  });

  it('32 channels, 4 kHz and 192 kHz (the ends of the accepted range) are transcribed', async () => {
    const uploads = [
      encodeWav({ channels: Array.from({ length: 32 }, () => new Float32Array(8000).fill(0.05)), sampleRate: 16000, format: 'pcm16' }),
      encodeWav({ channels: [new Float32Array(4000).fill(0.05)], sampleRate: 4000, format: 'pcm16' }),
      encodeWav({ channels: [new Float32Array(192000).fill(0.05)], sampleRate: 192000, format: 'pcm16' }),
    ];
    const durations = [];
    for (const bytes of uploads) {
      const res = await upload(bytes, { response_format: 'verbose_json' });
      expect(res.status).toBe(200);
      durations.push(((await res.json()) as { duration: number }).duration);
    }
    expect(durations).toEqual([0.5, 1, 1]);
  });

  it('a 32-channel mu-law WAV goes through ffmpeg and is transcribed', async () => {
    const wav = writeTemp(dir, 'c32.wav', encodeWav({ channels: Array.from({ length: 32 }, () => new Float32Array(8000).fill(0.05)), sampleRate: 16000, format: 'pcm16' }));
    const mulaw = dir.path('c32-mulaw.wav');
    ffmpeg('-i', wav, '-c:a', 'pcm_mulaw', mulaw);
    const res = await upload(new Uint8Array(readFileSync(mulaw)), { response_format: 'verbose_json' });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { duration: number }).duration).toBe(0.5);
  });
});
