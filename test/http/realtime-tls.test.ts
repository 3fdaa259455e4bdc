import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import type { RealtimeServerEvent } from 'openai/resources/realtime/realtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { clipPcm24 } from '../support/realtime-client.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { makeTestCertificate, type TestCertificate } from '../support/tls.js';

/**
 * The official `openai` SDK's realtime client (it only speaks wss:) against the server terminating TLS itself
 * with a certificate made for this test, streaming a real clip in real time.
 */
let cert: TestCertificate;
let server: TestServer;
let httpsURL: string;

beforeAll(async () => {
  cert = makeTestCertificate();
  server = await startTestServer({ TLS_CERT: cert.certPath, TLS_KEY: cert.keyPath, API_KEYS: 'sk-tls' });
  httpsURL = server.baseURL.replace(/^http:/, 'https:');
});
afterAll(async () => {
  await server.stop('test done');
  cert.remove();
});

describe('TLS', () => {
  it('needs both TLS_CERT and TLS_KEY, or neither', () => {
    expect(() => loadConfig({ TLS_CERT: '/x/cert.pem' })).toThrow(/TLS_CERT: set both TLS_CERT and TLS_KEY/);
    expect(() => loadConfig({ TLS_KEY: '/x/key.pem' })).toThrow(/TLS_CERT/);
  });

  it('serves HTTPS with the certificate', async () => {
    const { request } = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      request(`${httpsURL}/health`, { ca: cert.cert }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    expect(status).toBe(200);
  });

  it("the openai SDK's OpenAIRealtimeWS transcribes a clip streamed in real time: deltas while it plays, then the turn", async () => {
    const client = new OpenAI({ baseURL: `${httpsURL}/v1`, apiKey: 'sk-tls' });
    const rt = new OpenAIRealtimeWS({ intent: 'transcription', options: { ca: cert.cert } }, client);
    expect(rt.url.protocol).toBe('wss:');
    const events: RealtimeServerEvent[] = [];
    const errors: unknown[] = [];
    rt.on('event', (e) => events.push(e));
    rt.on('error', (e) => errors.push(e));
    const next = (type: RealtimeServerEvent['type'], timeoutMs = 30_000) =>
      new Promise<RealtimeServerEvent>((resolve, reject) => {
        const found = events.find((e) => e.type === type);
        if (found) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`no ${type}; got ${events.map((e) => e.type).join(', ')}`)), timeoutMs);
        rt.on('event', (e) => {
          if (e.type !== type) return;
          clearTimeout(timer);
          resolve(e);
        });
      });
    await new Promise<void>((resolve, reject) => {
      rt.socket.once('open', () => resolve());
      rt.socket.once('error', reject);
    });
    await next('session.created');
    rt.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { transcription: { model: 'gpt-4o-transcribe', language: 'en' } } } } });
    await next('session.updated');

    // 100 ms appends at the pace of speech, then a second of silence for the server to end the turn
    const pcm = Buffer.concat([clipPcm24('far_field'), Buffer.alloc(48000)]);
    const started = performance.now();
    let deltasWhilePlaying = 0;
    for (let at = 0; at < pcm.length; at += 4800) {
      rt.send({ type: 'input_audio_buffer.append', audio: pcm.subarray(at, at + 4800).toString('base64') });
      const wait = ((at + 4800) / 48000) * 1000 - (performance.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (at + 4800 < pcm.length - 48000) deltasWhilePlaying = events.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta').length;
    }
    const completed = await next('conversation.item.input_audio_transcription.completed');
    rt.close();

    expect(errors).toEqual([]);
    expect(deltasWhilePlaying).toBeGreaterThan(0);
    const started_ = events.find((e) => e.type === 'input_audio_buffer.speech_started');
    const committed = events.find((e) => e.type === 'input_audio_buffer.committed');
    expect(started_).toBeDefined();
    expect(committed).toMatchObject({ item_id: (started_ as { item_id: string }).item_id });
    if (completed.type !== 'conversation.item.input_audio_transcription.completed') throw new Error('unreachable');
    const deltas = events.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta' && e.item_id === completed.item_id);
    expect(completed.transcript).toBe(deltas.map((d) => ('delta' in d ? d.delta : '')).join(''));
    expect(completed.transcript.length).toBeGreaterThan(10);
  });
});
