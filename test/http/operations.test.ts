import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { expectSchema } from '../support/openapi.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { encodeWav } from '../support/wav-writer.js';

const clip = (name: string) => readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`));

function upload(baseURL: string, file: Uint8Array, fields: Record<string, string> = {}, init: RequestInit = {}) {
  const form = new FormData();
  form.append('file', new Blob([file]));
  form.append('model', 'mega-asr');
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  return fetch(`${baseURL}/v1/audio/transcriptions`, { method: 'POST', body: form, ...init });
}

/** Prometheus text exposition: every sample line parses (values as Go's ParseFloat reads them: NaN in any case). */
function parsePrometheus(text: string): Map<string, { labels: string; value: number }[]> {
  const samples = new Map<string, { labels: string; value: number }[]>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|nan|[+-]?inf)( -?\d+)?$/i.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${JSON.stringify(line)}`);
    samples.set(m[1]!, [...(samples.get(m[1]!) ?? []), { labels: m[2] ?? '', value: Number(m[3]) }]);
  }
  return samples;
}

const sum = (samples: { labels: string; value: number }[] | undefined, labelFilter = '') =>
  (samples ?? []).filter((s) => s.labels.includes(labelFilter)).reduce((a, s) => a + s.value, 0);

describe('authentication and metrics', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ API_KEYS: 'key-one,key-two' });
  });
  afterAll(() => server.stop('test done'));

  it('requires a configured bearer key on /v1 and leaves operations open', async () => {
    const anonymous = await upload(server.baseURL, clip('noise'));
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Bearer');
    const body = (await anonymous.json()) as { error: { code: string } };
    expectSchema('ErrorResponse', body);
    expect(body.error.code).toBe('invalid_api_key');

    const wrong = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'key-three', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'key-two', maxRetries: 0 });
    expect((await right.models.list()).data).toHaveLength(1);
    const t = await right.audio.transcriptions.create({ file: new File([clip('echo')], 'echo.wav'), model: 'mega-asr' });
    expect(FIXTURE_SENTENCES).toContain(t.text);

    for (const path of ['/health', '/ready', '/metrics', '/openapi.yaml']) expect((await fetch(`${server.baseURL}${path}`)).status).toBe(200);
  });

  it('exposes Prometheus text with request, audio, token, worker and process metrics', async () => {
    const ok = await upload(server.baseURL, clip('mixed'), { response_format: 'verbose_json' }, { headers: { authorization: 'Bearer key-one' } });
    expect(ok.status).toBe(200);
    const { duration } = (await ok.json()) as { duration: number };
    const res = await fetch(`${server.baseURL}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parsePrometheus(await res.text());
    expect(sum(m.get('http_requests_total'), 'route="/v1/audio/transcriptions",method="POST",status="200",format="verbose_json"')).toBeGreaterThanOrEqual(1);
    expect(sum(m.get('http_requests_total'), 'status="401"')).toBeGreaterThanOrEqual(1);
    expect(sum(m.get('http_request_duration_seconds_count'), 'route="/v1/audio/transcriptions"')).toBeGreaterThanOrEqual(2);
    expect(sum(m.get('asr_audio_seconds_total'))).toBeGreaterThanOrEqual(duration);
    expect(sum(m.get('asr_decoded_tokens_total'))).toBeGreaterThan(5);
    expect(sum(m.get('asr_real_time_factor_count'))).toBeGreaterThanOrEqual(2);
    expect(sum(m.get('asr_transcriptions_total'), 'outcome="completed"')).toBeGreaterThanOrEqual(2);
    expect(sum(m.get('asr_ready_workers'))).toBe(1);
    // one worker decoding up to MAX_BATCH (default 8) sequences together
    expect(sum(m.get('asr_capacity_sequences'))).toBe(8);
    expect(sum(m.get('asr_running_sequences'))).toBe(0);
    for (const name of ['asr_queue_depth', 'asr_busy_workers', 'asr_workers', 'asr_rejected_requests_total', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds']) {
      expect(m.has(name), name).toBe(true);
    }
  });

  it('reports where each request spent its time, per stage, and the decode steps with their batch sizes', async () => {
    const read = async () => parsePrometheus(await (await fetch(`${server.baseURL}/metrics`)).text());
    const before = await read();
    const ok = await upload(server.baseURL, clip('echo'), {}, { headers: { authorization: 'Bearer key-one' } });
    expect(ok.status).toBe(200);
    const after = await read();
    const grew = (name: string, label = '') => sum(after.get(name), label) - sum(before.get(name), label);
    for (const stage of ['audio_decode', 'features', 'encoder', 'prefill', 'decode_steps', 'decode_steps_host']) {
      expect(grew('asr_stage_seconds_count', `stage="${stage}"`), stage).toBe(1);
      expect(grew('asr_stage_seconds_sum', `stage="${stage}"`), stage).toBeGreaterThan(0);
    }
    // the host share is a part of the steps' time
    expect(grew('asr_stage_seconds_sum', 'stage="decode_steps_host"')).toBeLessThan(grew('asr_stage_seconds_sum', 'stage="decode_steps"'));
    const steps = grew('asr_decode_steps_total');
    expect(steps).toBeGreaterThan(5);
    // alone on the worker: one row per step
    expect(grew('asr_decode_step_rows_total')).toBe(steps);
  });
});

describe('overload, disconnects and failures', () => {
  let slow: TestServer;
  beforeAll(async () => {
    // A model that never stops: each request decodes until its token budget, so requests overlap.
    slow = await startTestServer({ MAX_BATCH: '2', MAX_QUEUE: '1', ASR_TOKENS_PER_SECOND: '40' }, 'never-stops');
  });
  afterAll(() => slow.stop('test done'));

  it('refuses requests beyond workers x MAX_BATCH + queue with 429, Retry-After and an OpenAI error, before reading them', async () => {
    const responses = await Promise.all(Array.from({ length: 7 }, () => upload(slow.baseURL, clip('noise'))));
    const statuses = responses.map((r) => r.status).sort();
    // 1 worker x 2 sequences + 1 waiting
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(1);
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(3);
    const refused = responses.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThanOrEqual(4);
    for (const r of refused) {
      const retry = Number(r.headers.get('retry-after'));
      expect(Number.isInteger(retry) && retry >= 1 && retry <= 60).toBe(true);
      const body = (await r.json()) as { error: object };
      expectSchema('ErrorResponse', body);
      expect(body.error).toMatchObject({ code: 'queue_full', type: 'rate_limit_exceeded' });
    }
    await Promise.all(responses.filter((r) => r.status === 200).map((r) => r.text()));
    const m = parsePrometheus(await (await fetch(`${slow.baseURL}/metrics`)).text());
    expect(sum(m.get('asr_rejected_requests_total'), 'reason="queue_full"')).toBe(refused.length);
  });

  it('cancels the work of a client that disconnects, between decode steps', async () => {
    const abort = new AbortController();
    const res = await upload(slow.baseURL, clip('noise'), { stream: 'true' }, { signal: abort.signal });
    const reader = res.body!.getReader();
    await reader.read(); // the first delta arrived: decoding is under way
    abort.abort();
    const deadline = Date.now() + 10_000;
    let cancelled = 0;
    while (Date.now() < deadline) {
      const m = parsePrometheus(await (await fetch(`${slow.baseURL}/metrics`)).text());
      cancelled = sum(m.get('asr_transcriptions_total'), 'outcome="cancelled"');
      if (cancelled >= 1 && sum(m.get('asr_busy_workers')) === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(cancelled).toBe(1);
    // the worker was not terminated: it serves the next request
    const next = await upload(slow.baseURL, clip('echo'));
    expect(next.status).toBe(200);
  });

  it('a client that leaves right after its upload is cancelled, and its queue place is held until the work stops', async () => {
    const audio = clip('noise');
    const boundary = 'gone';
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmega-asr\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n`),
      audio,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const { port } = new URL(slow.baseURL);
    const socket = connect(Number(port), '127.0.0.1');
    socket.write(`POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${body.length}\r\n\r\n`);
    socket.write(body);
    const deadline = Date.now() + 10_000;
    let busy = false;
    while (Date.now() < deadline && !busy) {
      busy = ((await (await fetch(`${slow.baseURL}/ready`)).json()) as { busyWorkers: number }).busyWorkers === 1;
      if (!busy) await new Promise((r) => setTimeout(r, 5));
    }
    expect(busy).toBe(true);
    const before = parsePrometheus(await (await fetch(`${slow.baseURL}/metrics`)).text());
    socket.destroy();
    let stats = { busyWorkers: 1, admitted: 1 };
    let cancelled = 0;
    while (Date.now() < deadline) {
      stats = (await (await fetch(`${slow.baseURL}/ready`)).json()) as typeof stats;
      const m = parsePrometheus(await (await fetch(`${slow.baseURL}/metrics`)).text());
      cancelled = sum(m.get('asr_transcriptions_total'), 'outcome="cancelled"') - sum(before.get('asr_transcriptions_total'), 'outcome="cancelled"');
      if (stats.admitted === 0) break;
      // while the abandoned work runs, it still holds its place
      if (stats.busyWorkers === 1) expect(stats.admitted).toBe(1);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(stats).toMatchObject({ admitted: 0, busyWorkers: 0 });
    expect(cancelled).toBe(1);
    const m = parsePrometheus(await (await fetch(`${slow.baseURL}/metrics`)).text());
    expect(sum(m.get('http_requests_total'), 'status="499"')).toBeGreaterThanOrEqual(1);
  });

  it('a task that fails gets a 500 for that request only; the worker keeps serving', async () => {
    // Without voice activity detection the whole 12 s reaches the encoder, which fails past 10 s.
    const failing = await startTestServer({ ASR_VAD: 'false' }, 'fails-long');
    try {
      const pcm = decodeWavToPcm(clip('noise'));
      const long = new Float32Array(16000 * 12);
      long.set(pcm.subarray(0, Math.min(pcm.length, long.length)));
      const wav = encodeWav({ channels: [long], sampleRate: 16000, format: 'float32' });
      const client = new OpenAI({ baseURL: `${failing.baseURL}/v1`, apiKey: 'x', maxRetries: 0 });
      const err = await client.audio.transcriptions.create({ file: new File([wav], 'long.wav'), model: 'mega-asr' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.InternalServerError);
      expect(err).toMatchObject({ status: 500, code: 'inference_failed' });
      expect((err as Error).message).not.toMatch(/\n\s+at /);
      expect((err as Error).message).not.toMatch(/\/tmp|\.onnx|rows/); // no paths or engine internals
      const ok = await client.audio.transcriptions.create({ file: new File([clip('echo')], 'echo.wav'), model: 'mega-asr' });
      expect(FIXTURE_SENTENCES).toContain(ok.text);
      expect((await fetch(`${failing.baseURL}/ready`)).status).toBe(200);
    } finally {
      await failing.stop('test done');
    }
  });

  it('reports not ready while a dead worker is replaced', async () => {
    const [thread] = slow.pool.threads;
    await thread!.terminate(); // idle: safe to terminate
    let sawNotReady = false;
    let readyAgain = false;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const status = (await fetch(`${slow.baseURL}/ready`)).status;
      if (status === 503) sawNotReady = true;
      if (sawNotReady && status === 200) {
        readyAgain = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(sawNotReady).toBe(true);
    expect(readyAgain).toBe(true);
    expect((await upload(slow.baseURL, clip('echo'))).status).toBe(200);
  });

  it('enforces the upload limit while the body streams (no Content-Length) with 413', async () => {
    const small = await startTestServer({ MAX_UPLOAD_BYTES: '100000' });
    try {
      const big = encodeWav({ channels: [new Float32Array(16000 * 5).fill(0.1)], sampleRate: 16000, format: 'pcm16' });
      const form = new FormData();
      form.append('model', 'mega-asr');
      form.append('file', new Blob([big]), 'big.wav');
      // A ReadableStream body is sent chunked, like the SDK's streamed uploads.
      const encoded = new Response(form);
      const res = await fetch(`${small.baseURL}/v1/audio/transcriptions`, {
        method: 'POST',
        body: encoded.body,
        headers: { 'content-type': encoded.headers.get('content-type')! },
        duplex: 'half',
      } as RequestInit);
      expect(res.status).toBe(413);
      const body = (await res.json()) as { error: object };
      expectSchema('ErrorResponse', body);
      expect(body.error).toMatchObject({ code: 'file_too_large', param: 'file' });
      const ok = await upload(small.baseURL, clip('echo').subarray(0, 90_000));
      expect(ok.status).toBe(200);
    } finally {
      await small.stop('test done');
    }
  });
});
