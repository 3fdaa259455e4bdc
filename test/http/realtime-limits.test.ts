import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { clipPcm24, RealtimeClient, wsURL } from '../support/realtime-client.js';
import { fixtureModel } from '../support/fixture-models.js';
import { startTestServer, type TestServer } from '../support/server.js';

/**
 * The session budget, the idle timeout, a client vanishing while its turn is being transcribed, and a drain,
 * against the real service on a model that never stops talking (so transcriptions are in flight for seconds).
 */
let server: TestServer;
let stopped = false;

beforeAll(async () => {
  server = await startTestServer(
    { MAX_REALTIME_SESSIONS: '2', REALTIME_IDLE_SECONDS: '2', ASR_TOKENS_PER_SECOND: '400', SHUTDOWN_GRACE_SECONDS: '0.5' },
    'never-stops',
  );
});
afterAll(async () => {
  if (!stopped) await server.stop('test done');
});

const open = async () => {
  const c = await RealtimeClient.connect(wsURL(server.baseURL));
  await c.next('session.created');
  return c;
};
const manual = { type: 'session.update', session: { type: 'transcription', audio: { input: { turn_detection: null } } } };

async function metric(line: string): Promise<number> {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.slice(line.length + 1)) : NaN;
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('the live-stream budget', () => {
  it('beyond MAX_REALTIME_SESSIONS a connection gets an error event, then close 1013 with the reason', async () => {
    const a = await open();
    const b = await open();
    expect(await metric('realtime_sessions')).toBe(2);
    const refusedBefore = await metric('realtime_refused_sessions_total{reason="max_sessions"}');
    const c = await RealtimeClient.connect(wsURL(server.baseURL));
    const closed = await c.closed;
    expect(c.types()).toEqual(['error']);
    expect(c.events[0]!.error).toMatchObject({ type: 'rate_limit_exceeded', code: 'too_many_sessions', event_id: null });
    expect(closed).toEqual({ code: 1013, reason: 'all 2 realtime sessions are in use' });
    expect(await metric('realtime_refused_sessions_total{reason="max_sessions"}')).toBe(refusedBefore + 1);
    // a place freed is a place taken
    await a.close();
    await until(async () => (await metric('realtime_sessions')) === 1, 2000);
    const d = await open();
    await Promise.all([b.close(), d.close()]);
  });
});

describe('an idle session', () => {
  it('is told, then closed (1000) after REALTIME_IDLE_SECONDS without a client event', async () => {
    const c = await open();
    const t0 = Date.now();
    const closed = await c.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(c.types()).toEqual(['session.created', 'error']);
    expect(c.events[1]!.error).toMatchObject({ code: 'idle_timeout' });
    expect(closed).toEqual({ code: 1000, reason: 'idle for 2 s' });
  });
});

describe('a client that vanishes mid-turn', () => {
  it('cancels its transcription in flight at once and frees its place; the other session carries on', async () => {
    const other = await open();
    other.send(manual);
    const c = await open();
    c.send(manual);
    await c.stream(clipPcm24('far_field'), { bytesPerSecond: 48000, speed: 16 });
    c.send({ type: 'input_audio_buffer.commit' });
    await c.next('input_audio_buffer.committed');
    // The turn's final is decoding: the model never stops, so left alone it runs to its token budget (~8 s here).
    await until(async () => (await metric('asr_running_sequences')) >= 1, 5000);
    c.socket.terminate();
    const idle = async () =>
      (await metric('realtime_sessions')) === 1 && (await metric('asr_admitted_requests')) === 0 && (await metric('asr_running_sequences')) === 0;
    await until(idle, 1000);
    // the other session still works
    other.send({ type: 'input_audio_buffer.commit', event_id: 'still-here' });
    expect((await other.next('error')).error).toMatchObject({ code: 'input_audio_buffer_commit_empty', event_id: 'still-here' });
    await other.close();
  });
});

describe('a draining server', () => {
  it('refuses new sessions and closes open ones with 1001 once their committed turns end', async () => {
    const c = await open();
    c.send(manual);
    await c.stream(clipPcm24('noise'), { bytesPerSecond: 48000, speed: 16 });
    c.send({ type: 'input_audio_buffer.commit' });
    const committed = await c.next('input_audio_buffer.committed');
    stopped = true;
    const stopping = server.stop('test drain');
    const late = await RealtimeClient.connect(wsURL(server.baseURL));
    expect(await late.closed).toEqual({ code: 1001, reason: 'the server is shutting down' });
    expect(late.events.map((e) => e.error)).toEqual([expect.objectContaining({ code: 'service_unavailable', type: 'server_error' })]);
    const closed = await c.closed;
    expect(closed).toEqual({ code: 1001, reason: 'the server is shutting down' });
    // its turn ended (cut by the short grace: failed) before the close, and the item is final
    const end = c.events.find((e) => e.item_id === committed.item_id && e.type.startsWith('conversation.item.input_audio_transcription.') && !e.type.endsWith('.delta'));
    expect(end?.type).toMatch(/\.(completed|failed)$/);
    expect(c.types().at(-1)).toBe('conversation.item.done');
    await stopping;
  });
});

describe('realtime readiness', () => {
  it('takes live sessions from the moment /ready first says yes', async () => {
    const config = loadConfig({ MODEL_DIR: fixtureModel('default'), ASR_DEVICE: 'cpu', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'silent', WORKERS: '1', DECODE_WORKERS: '1' });
    const starting = await startServer(config);
    try {
      const { port } = starting.app.server.address() as AddressInfo;
      const base = `http://127.0.0.1:${port}`;
      // before the model is loaded a live session is refused as not ready, as uploads are
      await expect(RealtimeClient.connect(wsURL(base)).then((c) => c.next('error'))).resolves.toMatchObject({ error: { code: 'service_unavailable' } });
      while ((await fetch(`${base}/ready`)).status !== 200) await new Promise((r) => setTimeout(r, 2));
      const c = await RealtimeClient.connect(wsURL(base));
      await c.next('session.created');
      await c.close();
    } finally {
      await starting.stop('test done');
    }
  });
});
