import { createReadStream, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { documentedStatuses, expectSchema } from '../support/openapi.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { encodeWav } from '../support/wav-writer.js';

const clipPath = (name: string) => sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`);
const clipSeconds = (name: string) => {
  const bytes = readFileSync(clipPath(name));
  return (bytes.length - 44) / 2 / 24000; // 24 kHz mono 16-bit with a 44-byte header
};

let server: TestServer;
let client: OpenAI;

beforeAll(async () => {
  server = await startTestServer();
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'any-key', maxRetries: 0 });
});
afterAll(() => server.stop('test done'));

/** A curl-style request: raw multipart built by hand-picked fields. */
async function post(fields: Record<string, string | Blob>, path = '/v1/audio/transcriptions', headers: Record<string, string> = {}) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  return fetch(`${server.baseURL}${path}`, { method: 'POST', body: form, headers });
}

async function expectError(res: Response, status: number, code: string | null, param: string | null = null) {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await res.json()) as { error: { code: string; param: string | null; message: string } };
  expectSchema('ErrorResponse', body);
  expect(body.error.code).toBe(code);
  expect(body.error.param).toBe(param);
  expect(body.error.message).not.toMatch(/\n\s+at /);
  expect(documentedStatuses('/v1/audio/transcriptions', 'post')).toContain(String(status));
  return body.error;
}

const wavBlob = (seconds: number) =>
  new Blob([encodeWav({ channels: [new Float32Array(Math.round(seconds * 16000)).fill(0.01)], sampleRate: 16000, format: 'pcm16' })]);

describe('the official openai SDK', () => {
  it('json (default), with a streamed upload and usage rounded up', async () => {
    const t = await client.audio.transcriptions.create({ file: createReadStream(clipPath('noise')), model: 'mega-asr' });
    expectSchema('CreateTranscriptionResponseJson', t);
    expect(FIXTURE_SENTENCES).toContain(t.text);
    expect(t.usage).toEqual({ type: 'duration', seconds: Math.ceil(clipSeconds('noise')) });
  });

  it('accepts the OpenAI model names as aliases', async () => {
    for (const model of ['whisper-1', 'gpt-4o-transcribe', 'gpt-4o-mini-transcribe']) {
      const t = await client.audio.transcriptions.create({ file: createReadStream(clipPath('echo')), model });
      expect(FIXTURE_SENTENCES).toContain(t.text);
    }
  });

  it('text, srt and vtt come back as strings', async () => {
    const file = () => createReadStream(clipPath('mixed'));
    const text = await client.audio.transcriptions.create({ file: file(), model: 'whisper-1', response_format: 'text' });
    expect(typeof text).toBe('string');
    expect(FIXTURE_SENTENCES).toContain(text.trim());
    const srt = await client.audio.transcriptions.create({ file: file(), model: 'whisper-1', response_format: 'srt' });
    // cues start where the speech starts (voice activity), in the recording's time line
    expect(srt).toMatch(/^(\d+\n00:00:0\d,\d{3} --> 00:00:0\d,\d{3}\n.+\n\n)+$/);
    const vtt = await client.audio.transcriptions.create({ file: file(), model: 'whisper-1', response_format: 'vtt' });
    expect(vtt).toMatch(/^WEBVTT\n\n(00:00:0\d\.\d{3} --> 00:00:0\d\.\d{3}\n.+\n\n)+$/);
  });

  it('verbose_json with language, a numeric duration and segments', async () => {
    const v = await client.audio.transcriptions.create({
      file: await toFile(readFileSync(clipPath('dropout')), 'dropout.wav'),
      model: 'mega-asr',
      response_format: 'verbose_json',
      timestamp_granularities: ['segment'],
    });
    expectSchema('CreateTranscriptionResponseVerboseJson', v);
    expect(v.language).toBe('english');
    expect(v.duration).toBeCloseTo(clipSeconds('dropout'), 3);
    // segments follow the speech: inside the recording, in order, each one transcribed on its own
    const segments = v.segments!;
    expect(segments.length).toBeGreaterThanOrEqual(1);
    expect(segments[0]!.start).toBeLessThan(1);
    expect(segments.at(-1)!.end).toBeLessThanOrEqual(v.duration);
    for (const [i, s] of segments.entries()) {
      expect(s.id).toBe(i);
      expect(s.end).toBeGreaterThan(s.start);
      expect(FIXTURE_SENTENCES).toContain(s.text);
    }
    expect(v.text).toBe(segments.map((s) => s.text).join(' '));
    // the segment's tokens are its text, without the "language English<asr_text>" header
    const tokens = segments[0]!.tokens;
    expect(tokens).not.toContain(151704);
    expect(tokens[0]).not.toBe(11528); // "language"
    expect(tokens.length).toBeGreaterThan(5);
  });

  it('answers silence with an empty transcript, not an invented sentence', async () => {
    const silent = encodeWav({ channels: [new Float32Array(3 * 16000)], sampleRate: 16000, format: 'pcm16' });
    const v = await client.audio.transcriptions.create({ file: await toFile(silent, 'silence.wav'), model: 'mega-asr', response_format: 'verbose_json' });
    expect(v).toMatchObject({ text: '', language: '', segments: [], duration: 3 });
  });

  it('forces the language from an ISO code, and passes the prompt as context', async () => {
    const v = await client.audio.transcriptions.create({
      file: createReadStream(clipPath('far_field')),
      model: 'mega-asr',
      response_format: 'verbose_json',
      language: 'en',
      prompt: 'appointment, forms',
    });
    expect(v.language).toBe('english');
    expect(FIXTURE_SENTENCES).toContain(v.text);
  });

  it('streams transcript.text.delta events, then transcript.text.done', async () => {
    const stream = await client.audio.transcriptions.create({ file: createReadStream(clipPath('recording')), model: 'mega-asr', stream: true });
    const deltas: string[] = [];
    let done: { text: string } | undefined;
    for await (const event of stream) {
      if (event.type === 'transcript.text.delta') {
        expectSchema('TranscriptTextDeltaEvent', event);
        deltas.push(event.delta);
      } else if (event.type === 'transcript.text.done') {
        expectSchema('TranscriptTextDoneEvent', event);
        done = event;
      }
    }
    expect(deltas.length).toBeGreaterThan(2);
    expect(done?.text).toBe(deltas.join(''));
    expect(FIXTURE_SENTENCES).toContain(done?.text);
  });

  it('raises the SDK error classes with code and param', async () => {
    const file = () => createReadStream(clipPath('noise'));
    const notFound = await client.audio.transcriptions.create({ file: file(), model: 'gpt-5' }).catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(OpenAI.NotFoundError);
    expect(notFound).toMatchObject({ status: 404, code: 'model_not_found', param: 'model' });
    expect((notFound as Error).message).toMatch(/'mega-asr'/);
    const language = await client.audio.transcriptions.create({ file: file(), model: 'mega-asr', language: 'xx' }).catch((e: unknown) => e);
    expect(language).toBeInstanceOf(OpenAI.BadRequestError);
    expect(language).toMatchObject({ status: 400, code: 'unsupported_language', param: 'language' });
    const words = await client.audio.transcriptions
      .create({ file: file(), model: 'mega-asr', response_format: 'verbose_json', timestamp_granularities: ['word'] })
      .catch((e: unknown) => e);
    expect(words).toMatchObject({ status: 400, param: 'timestamp_granularities[]', code: 'unsupported_value' });
    const temperature = await client.audio.transcriptions.create({ file: file(), model: 'mega-asr', temperature: 3 }).catch((e: unknown) => e);
    expect(temperature).toMatchObject({ status: 400, param: 'temperature' });
    const translation = await client.audio.translations.create({ file: file(), model: 'whisper-1' }).catch((e: unknown) => e);
    expect(translation).toBeInstanceOf(OpenAI.BadRequestError);
    expect(translation).toMatchObject({ code: 'unsupported_task' });
  });

  it('lists and retrieves models in OpenAI shape', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(['mega-asr']);
    const res = await fetch(`${server.baseURL}/v1/models`);
    expectSchema('ListModelsResponse', await res.json());
    const model = await client.models.retrieve('whisper-1');
    expectSchema('Model', model);
    expect(model).toMatchObject({ id: 'whisper-1', object: 'model', owned_by: 'mega-asr-server' });
    await expect(client.models.retrieve('davinci')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });
});

describe('raw multipart requests (curl-style)', () => {
  it('transcribes with just file and model, and answers with a request id', async () => {
    const res = await post({ file: new Blob([readFileSync(clipPath('obstructed'))]), model: 'mega-asr' }, undefined, { 'x-request-id': 'abc-123' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('abc-123');
    const body = (await res.json()) as { text: string };
    expect(FIXTURE_SENTENCES).toContain(body.text);
    const other = await post({ file: new Blob([readFileSync(clipPath('obstructed'))]), model: 'mega-asr' });
    expect(other.headers.get('x-request-id')).toMatch(/^req_[0-9a-f]{32}$/);
  });

  it('streams the text format too, ending with [DONE]', async () => {
    const res = await post({ file: new Blob([readFileSync(clipPath('echo'))]), model: 'mega-asr', stream: 'true', response_format: 'text' });
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const raw = await res.text();
    const events = raw.split('\n\n').filter(Boolean);
    expect(events.at(-1)).toBe('data: [DONE]');
    for (const e of events.slice(0, -1)) expect(e).toMatch(/^data: \{/);
    const done = JSON.parse(events.at(-2)!.slice(6)) as { type: string };
    expect(done.type).toBe('transcript.text.done');
  });

  it('answers bad requests with OpenAI errors naming the parameter', async () => {
    const audio = () => new Blob([readFileSync(clipPath('noise'))]);
    await expectError(await post({ model: 'mega-asr' }), 400, 'missing_required_parameter', 'file');
    await expectError(await post({ file: audio() }), 400, 'missing_required_parameter', 'model');
    await expectError(await post({ file: audio(), model: 'mega-asr', response_format: 'xml' }), 400, 'invalid_value', 'response_format');
    await expectError(await post({ file: audio(), model: 'mega-asr', temperature: 'warm' }), 400, 'invalid_value', 'temperature');
    await expectError(await post({ file: audio(), model: 'mega-asr', stream: 'maybe' }), 400, 'invalid_value', 'stream');
    await expectError(await post({ file: audio(), model: 'mega-asr', stream: 'true', response_format: 'srt' }), 400, 'unsupported_value', 'stream');
    await expectError(await post({ file: audio(), model: 'mega-asr', language: 'Klingon' }), 400, 'unsupported_language', 'language');
    await expectError(await post({ audio: audio(), model: 'mega-asr' }), 400, 'unexpected_file', 'audio');
  });

  it('refuses empty, too-short and undecodable audio with 400', async () => {
    await expectError(await post({ file: new Blob([]), model: 'mega-asr' }), 400, 'audio_too_short', 'file');
    await expectError(await post({ file: wavBlob(0.05), model: 'mega-asr' }), 400, 'audio_too_short', 'file');
    const random = new Uint8Array(4096).map((_, i) => (i * 7919) % 251);
    const res = await post({ file: new Blob([random]), model: 'mega-asr' });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; param: string } };
    expectSchema('ErrorResponse', body);
    expect(['invalid_audio', 'unsupported_audio_format']).toContain(body.error.code);
    expect(body.error.param).toBe('file');
    await expectError(await post({ file: new Blob([Buffer.from('RIFF\x10\x00\x00\x00WAVEfmt ')]), model: 'mega-asr' }), 400, 'invalid_audio', 'file');
    // the service is still fine
    expect((await post({ file: wavBlob(1), model: 'mega-asr' })).status).toBe(200);
  });

  it('answers malformed multipart bodies with 400, not 500', async () => {
    const bodies: [string, string][] = [
      ['multipart/form-data', 'no boundary at all'],
      ['multipart/form-data; boundary=XX', '--XX\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'],
      ['multipart/form-data; boundary=XX', 'random bytes without any structure \u0000\u0001'],
    ];
    for (const [type, body] of bodies) {
      const res = await fetch(`${server.baseURL}/v1/audio/transcriptions`, { method: 'POST', headers: { 'content-type': type }, body });
      await expectError(res, 400, 'invalid_multipart');
    }
  });

  it('refuses a non-multipart body before touching the queue', async () => {
    const res = await fetch(`${server.baseURL}/v1/audio/transcriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mega-asr' }),
    });
    await expectError(res, 400, 'invalid_content_type');
    const unknownType = await fetch(`${server.baseURL}/v1/audio/transcriptions`, { method: 'POST', headers: { 'content-type': 'audio/wav' }, body: 'x' });
    await expectError(unknownType, 415, 'unsupported_media_type');
  });

  it('answers Fastify and Node level failures in the same shape', async () => {
    const badUrl = await fetch(`${server.baseURL}/v1/models/%`);
    expect(badUrl.status).toBe(400);
    expectSchema('ErrorResponse', await badUrl.json());
    const longUrl = await fetch(`${server.baseURL}/v1/models/${'x'.repeat(100_000)}`);
    expect(longUrl.status).toBe(431);
    expectSchema('ErrorResponse', await longUrl.json());
    const raw = await new Promise<string>((resolve) => {
      const { port } = new URL(server.baseURL);
      let out = '';
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('NONSENSE\r\n\r\n'));
      socket.on('data', (d) => (out += d.toString()));
      socket.on('close', () => resolve(out));
    });
    expect(raw).toMatch(/^HTTP\/1\.1 400 /);
    expectSchema('ErrorResponse', JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)));
    const noId = await fetch(`${server.baseURL}/v1/models/`);
    expect(noId.status).toBe(404);
  });

  it('bounds the prompt', async () => {
    const res = await post({ file: new Blob([readFileSync(clipPath('noise'))]), model: 'mega-asr', prompt: 'word '.repeat(2000) });
    await expectError(res, 400, 'invalid_value', 'prompt');
  });

  it('answers unknown routes and methods with an OpenAI 404', async () => {
    for (const [method, path] of [['GET', '/v1/nope'], ['GET', '/v1/audio/transcriptions'], ['DELETE', '/v1/models']] as const) {
      const res = await fetch(`${server.baseURL}${path}`, { method });
      expect(res.status).toBe(404);
      const body = (await res.json()) as { error: { message: string } };
      expectSchema('ErrorResponse', body);
      expect(body.error.message).toBe(`Invalid URL (${method} ${path})`);
    }
  });

  it('serves health, readiness and its own OpenAPI document', async () => {
    expect(await (await fetch(`${server.baseURL}/health`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${server.baseURL}/ready`);
    expect(ready.status).toBe(200);
    const body = await ready.json();
    expectSchema('Readiness', body);
    expect(body).toMatchObject({ status: 'ready', workers: 1, readyWorkers: 1, draining: false });
    const doc = await fetch(`${server.baseURL}/openapi.yaml`);
    expect(doc.headers.get('content-type')).toMatch(/^application\/yaml/);
    expect(await doc.text()).toBe(readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8'));
  });
});
