import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resample } from '../../src/audio/resample.js';
import { clipPcm24, clipSamples, pcm16, RealtimeClient, wsURL } from '../support/realtime-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

/** The real service on the generated model, with small limits so the tests can reach them. */
let server: TestServer;
const KEY = 'sk-realtime-test';
const auth = { headers: { authorization: `Bearer ${KEY}` } };
const MAX_APPEND = 64 * 1024;

beforeAll(async () => {
  server = await startTestServer({ API_KEYS: KEY, REALTIME_MAX_APPEND_BYTES: String(MAX_APPEND), REALTIME_MAX_EVENTS_PER_SECOND: '100' });
});
afterAll(() => server.stop('test done'));

const open = async () => {
  const c = await RealtimeClient.connect(wsURL(server.baseURL), [], auth);
  await c.next('session.created');
  return c;
};
const manual = { type: 'session.update', session: { type: 'transcription', audio: { input: { turn_detection: null } } } };
const silence = (seconds: number, rate = 24000) => Buffer.alloc(Math.round(seconds * rate) * 2);

async function metric(name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ')[1]) : NaN;
}

async function until(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A turn's events in OpenAI's shape: deltas add up to the transcript, and the item's events agree on its id. */
function expectTurn(c: RealtimeClient, itemId: string) {
  const mine = c.events.filter((e) => e.item_id === itemId || (e.item as { id?: string } | undefined)?.id === itemId);
  const deltas = mine.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta');
  const completed = mine.find((e) => e.type === 'conversation.item.input_audio_transcription.completed')!;
  expect(completed).toMatchObject({ content_index: 0, usage: { type: 'tokens' } });
  for (const d of deltas) expect(d).toMatchObject({ content_index: 0, delta: expect.any(String) });
  expect(completed.transcript).toBe(deltas.map((d) => d.delta).join(''));
  const usage = completed.usage as Record<string, number>;
  expect(usage.total_tokens).toBe(usage.input_tokens! + usage.output_tokens!);
  const order = mine.map((e) => e.type).filter((t) => t.startsWith('conversation.item.') && !t.endsWith('.delta'));
  expect(order).toEqual(['conversation.item.added', 'conversation.item.input_audio_transcription.completed', 'conversation.item.done']);
  const done = mine.find((e) => e.type === 'conversation.item.done')!;
  expect(done.item).toMatchObject({ id: itemId, type: 'message', role: 'user', content: [{ type: 'input_audio', transcript: completed.transcript }] });
  return { deltas, completed };
}

describe('the handshake', () => {
  it('needs the key: 401 before the upgrade without it or with a wrong one', async () => {
    await expect(RealtimeClient.connect(wsURL(server.baseURL))).rejects.toMatchObject({ status: 401 });
    await expect(RealtimeClient.connect(wsURL(server.baseURL), [], { headers: { authorization: 'Bearer wrong' } })).rejects.toMatchObject({ status: 401 });
    await expect(RealtimeClient.connect(wsURL(server.baseURL), ['realtime', 'openai-insecure-api-key.wrong'])).rejects.toMatchObject({ status: 401 });
  });

  it("takes the key as a browser's subprotocol and answers with 'realtime', never the key", async () => {
    const c = await RealtimeClient.connect(wsURL(server.baseURL), ['realtime', `openai-insecure-api-key.${KEY}`]);
    expect(c.socket.protocol).toBe('realtime');
    await c.next('session.created');
    await c.close();
  });

  it('refuses other intents and plain HTTP with a readable error', async () => {
    for (const query of ['?intent=conversation', '?model=gpt-realtime', '']) {
      const refused = await RealtimeClient.connect(wsURL(server.baseURL, query), [], auth).catch((e: { status: number; body: string }) => e);
      expect(refused).toMatchObject({ status: 400 });
      expect(JSON.parse((refused as { body: string }).body)).toMatchObject({ error: { code: 'unsupported_intent', param: 'intent' } });
    }
    const plain = await fetch(`${server.baseURL}/v1/realtime?intent=transcription`, auth);
    expect(plain.status).toBe(426);
    expect(((await plain.json()) as { error: { code: string } }).error.code).toBe('upgrade_required');
  });
});

describe('the session', () => {
  it("starts with OpenAI's defaults and takes updates field by field", async () => {
    const c = await RealtimeClient.connect(wsURL(server.baseURL), [], auth);
    const created = await c.next('session.created');
    expect(created.session).toEqual({
      id: expect.stringMatching(/^sess_/),
      object: 'realtime.transcription_session',
      type: 'transcription',
      audio: {
        input: {
          format: { type: 'audio/pcm', rate: 24000 },
          transcription: { model: 'mega-asr', prompt: '' },
          turn_detection: { type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500 },
        },
      },
      include: [],
    });
    c.send({
      type: 'session.update',
      session: {
        type: 'transcription',
        audio: {
          input: {
            format: { type: 'audio/pcm', rate: 16000 },
            transcription: { model: 'gpt-4o-transcribe', language: 'en', prompt: 'Weather report.', keywords: ['Reykjavik'] },
            turn_detection: { type: 'server_vad', threshold: 0.6, silence_duration_ms: 700 },
            noise_reduction: { type: 'near_field' },
          },
        },
      },
    });
    const updated = (await c.next('session.updated')).session as { id: string; audio: { input: Record<string, unknown> } };
    expect(updated.id).toBe((created.session as { id: string }).id);
    expect(updated.audio.input).toEqual({
      format: { type: 'audio/pcm', rate: 16000 },
      transcription: { model: 'gpt-4o-transcribe', language: 'en', prompt: 'Weather report.', keywords: ['Reykjavik'] },
      turn_detection: { type: 'server_vad', threshold: 0.6, prefix_padding_ms: 300, silence_duration_ms: 700 },
      noise_reduction: { type: 'near_field' },
    });
    // only what is present changes
    c.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcmu' } } } } });
    const again = (await c.next('session.updated')).session as { audio: { input: Record<string, unknown> } };
    expect(again.audio.input).toEqual({ ...updated.audio.input, format: { type: 'audio/pcmu' } });
    await c.close();
  });

  it('refuses what it cannot honour with an error naming the parameter, and keeps the session as it was', async () => {
    const c = await open();
    const refusals: Array<[Record<string, unknown>, string, string]> = [
      [{ type: 'realtime' }, 'invalid_value', 'session.type'],
      [{ type: 'transcription', audio: { input: { format: { type: 'audio/opus' } } } }, 'invalid_value', 'session.audio.input.format.type'],
      [{ type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 44100 } } } }, 'invalid_value', 'session.audio.input.format.rate'],
      [{ type: 'transcription', audio: { input: { turn_detection: { type: 'semantic_vad' } } } }, 'unsupported_turn_detection', 'session.audio.input.turn_detection.type'],
      [{ type: 'transcription', audio: { input: { turn_detection: { type: 'server_vad', threshold: 2 } } } }, 'invalid_value', 'session.audio.input.turn_detection.threshold'],
      [{ type: 'transcription', audio: { input: { turn_detection: { type: 'server_vad', threshold: 1 } } } }, 'invalid_value', 'session.audio.input.turn_detection.threshold'],
      [{ type: 'transcription', include: ['item.input_audio_transcription.logprobs'] }, 'unsupported_include', 'session.include'],
      [{ type: 'transcription', audio: { input: { transcription: { model: 'gpt-5' } } } }, 'model_not_found', 'session.audio.input.transcription.model'],
      [{ type: 'transcription', audio: { input: { transcription: { language: 'xx' } } } }, 'unsupported_language', 'session.audio.input.transcription.language'],
      [{}, 'missing_required_parameter', 'session.type'],
    ];
    for (const [session, code, param] of refusals) {
      c.send({ type: 'session.update', event_id: `evt_${code}`, session });
      const e = await c.next('error');
      expect(e.error).toEqual({ type: 'invalid_request_error', code, param, message: expect.any(String), event_id: `evt_${code}` });
    }
    expect(c.types().filter((t) => t === 'session.updated')).toEqual([]);
    c.send({ type: 'session.update', session: { type: 'transcription' } });
    const unchanged = (await c.next('session.updated')).session as { audio: { input: { format: unknown; turn_detection: unknown } } };
    expect(unchanged.audio.input.format).toEqual({ type: 'audio/pcm', rate: 24000 });
    expect(unchanged.audio.input.turn_detection).toMatchObject({ type: 'server_vad', threshold: 0.5 });
    await c.close();
  });
});

describe('turns', () => {
  it('without turn detection: text streams while the audio arrives, the commit ends the turn, the transcript is the deltas joined', async () => {
    const c = await open();
    c.send(manual);
    await c.next('session.updated');
    // at the pace of speech, as a microphone sends it
    await c.stream(clipPcm24('noise'), { bytesPerSecond: 48000, speed: 1 });
    const beforeCommit = c.types().filter((t) => t === 'conversation.item.input_audio_transcription.delta').length;
    c.send({ type: 'input_audio_buffer.commit' });
    const committed = await c.next('input_audio_buffer.committed');
    expect(committed).toMatchObject({ item_id: expect.stringMatching(/^item_/), previous_item_id: null });
    await c.next('conversation.item.done');
    const { completed } = expectTurn(c, committed.item_id as string);
    expect(beforeCommit).toBeGreaterThan(0);
    expect(String(completed.transcript).length).toBeGreaterThan(10);
    expect(new Set(c.events.map((e) => e.event_id)).size).toBe(c.events.length);
    // a partial's latency was recorded
    expect(await metric('realtime_partial_latency_seconds_count')).toBeGreaterThan(0);
    await c.close();
  });

  it('with server_vad: the server finds both turns in 16 kHz audio and chains their items', async () => {
    const c = await open();
    c.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 16000 } } } } });
    await c.next('session.updated');
    const clip = (name: string) => pcm16(resample(clipSamples(name), 24000, 16000));
    const audio = Buffer.concat([silence(0.5, 16000), clip('noise'), silence(1.5, 16000), clip('recording'), silence(1.5, 16000)]);
    await c.stream(audio, { bytesPerSecond: 32000, speed: 4 });
    const first = await c.next('input_audio_buffer.speech_started');
    const stopped = await c.next('input_audio_buffer.speech_stopped');
    expect(stopped.item_id).toBe(first.item_id);
    expect(Number(first.audio_start_ms)).toBeGreaterThanOrEqual(0);
    expect(Number(stopped.audio_end_ms)).toBeGreaterThan(Number(first.audio_start_ms) + 3000);
    const second = await c.next('input_audio_buffer.speech_started');
    const committed = c.events.filter((e) => e.type === 'input_audio_buffer.committed');
    await until(async () => c.types().filter((t) => t === 'conversation.item.done').length === 2, 30_000);
    const committedNow = c.events.filter((e) => e.type === 'input_audio_buffer.committed');
    expect(committedNow.map((e) => e.item_id)).toEqual([first.item_id, second.item_id]);
    expect(committedNow[1]!.previous_item_id).toBe(first.item_id);
    expect(committed.length).toBeGreaterThanOrEqual(1);
    for (const e of committedNow) expectTurn(c, e.item_id as string);
    await c.close();
  });
});

/** G.711 mu-law encoding of one sample (ITU-T G.711, the usual bias-and-segment form). */
function muLaw(sample: number): number {
  const BIAS = 0x84;
  let x = Math.max(-32635, Math.min(32635, Math.round(sample * 32767)));
  const sign = x < 0 ? 0x80 : 0;
  if (x < 0) x = -x;
  x += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (x & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (x >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

describe('telephone audio', () => {
  it('audio/pcmu (G.711 mu-law, 8 kHz) is transcribed like PCM', async () => {
    const c = await open();
    c.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcmu' }, turn_detection: null } } } });
    await c.next('session.updated');
    const audio = Buffer.from(Array.from(resample(clipSamples('recording'), 24000, 8000), muLaw));
    await c.stream(audio, { bytesPerSecond: 8000, speed: 8 });
    c.send({ type: 'input_audio_buffer.commit' });
    const committed = await c.next('input_audio_buffer.committed');
    await c.next('conversation.item.done');
    const { completed } = expectTurn(c, committed.item_id as string);
    expect(String(completed.transcript).length).toBeGreaterThan(10);
    // the same clip as 24 kHz PCM takes as many audio tokens: the bytes were read as 8 kHz mu-law
    c.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 24000 } } } } });
    await c.next('session.updated');
    await c.stream(clipPcm24('recording'), { bytesPerSecond: 48000, speed: 8 });
    c.send({ type: 'input_audio_buffer.commit' });
    const pcm = await c.next('conversation.item.input_audio_transcription.completed');
    const audioTokens = (e: Record<string, unknown>) => (e.usage as { input_token_details: { audio_tokens: number } }).input_token_details.audio_tokens;
    expect(Math.abs(audioTokens(completed) - audioTokens(pcm))).toBeLessThanOrEqual(2);
    await c.close();
  });
});

describe('bad input never hurts', () => {
  it('answers each bad event with an error, and the session (and a bystander) keep working', async () => {
    const bystander = await open();
    bystander.send(manual);
    const bystanderTurn = bystander.stream(clipPcm24('echo'), { bytesPerSecond: 48000, speed: 2 });

    const c = await open();
    c.send(manual);
    await c.next('session.updated');
    const bad: Array<[string | Buffer, string, string | null]> = [
      ['{"type": "session.update", ', 'invalid_json', null],
      ['[1, 2]', 'invalid_event', null],
      ['{"type": "no.such.event", "event_id": "e1"}', 'invalid_event', 'type'],
      ['{"type": "response.create"}', 'unsupported_event', 'type'],
      ['{"type": "transcription_session.update", "session": {}}', 'unsupported_event', 'type'],
      ['{"type": "input_audio_buffer.append"}', 'missing_required_parameter', 'audio'],
      ['{"type": "input_audio_buffer.append", "audio": 12}', 'invalid_value', 'audio'],
      ['{"type": "input_audio_buffer.append", "audio": "not base64!"}', 'invalid_audio', 'audio'],
      ['{"type": "input_audio_buffer.append", "audio": "AAA"}', 'invalid_audio', 'audio'],
      [JSON.stringify({ type: 'input_audio_buffer.append', audio: Buffer.alloc(MAX_APPEND + 2).toString('base64') }), 'audio_too_large', 'audio'],
      [Buffer.from([1, 2, 3]), 'invalid_event', null],
      ['{"type": "input_audio_buffer.commit", "event_id": "e2"}', 'input_audio_buffer_commit_empty', null],
    ];
    for (const [frame, code, param] of bad) {
      c.socket.send(frame);
      const e = await c.next('error');
      expect(e.error).toMatchObject({ code, param });
      expect(String((e.error as { message: string }).message)).not.toMatch(/\n\s+at /);
    }
    expect(c.events.filter((e) => e.type === 'error').map((e) => (e.error as { event_id: unknown }).event_id)).toContain('e1');

    // a flood of tiny appends: one error for the second, the rest dropped, counted
    const droppedBefore = await metric('realtime_dropped_audio_seconds_total', '{reason="rate_limited"}');
    for (let i = 0; i < 300; i++) c.send({ type: 'input_audio_buffer.append', audio: Buffer.alloc(2).toString('base64') });
    const flood = await c.next('error');
    expect(flood.error).toMatchObject({ type: 'rate_limit_exceeded', code: 'rate_limit_exceeded' });
    expect(await metric('realtime_dropped_audio_seconds_total', '{reason="rate_limited"}')).toBeGreaterThan(droppedBefore);
    await new Promise((r) => setTimeout(r, 1100));
    expect(c.types().filter((t) => t === 'error')).toHaveLength(bad.length + 1);

    // the same session still transcribes
    c.send({ type: 'input_audio_buffer.clear' });
    await c.next('input_audio_buffer.cleared');
    await c.stream(clipPcm24('noise'), { bytesPerSecond: 48000, speed: 8 });
    c.send({ type: 'input_audio_buffer.commit' });
    const committed = await c.next('input_audio_buffer.committed');
    await c.next('conversation.item.done');
    expectTurn(c, committed.item_id as string);
    await c.close();

    await bystanderTurn;
    bystander.send({ type: 'input_audio_buffer.commit' });
    const b = await bystander.next('input_audio_buffer.committed');
    await bystander.next('conversation.item.done');
    expectTurn(bystander, b.item_id as string);
    expect(bystander.types()).not.toContain('error');
    await bystander.close();
  });

  it('a frame far beyond the append limit closes the socket (1009) without hurting the server', async () => {
    const c = await open();
    c.socket.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: Buffer.alloc(MAX_APPEND * 3).toString('base64') }));
    expect((await c.closed).code).toBe(1009);
    const d = await open();
    await d.close();
  });
});
