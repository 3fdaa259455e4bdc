import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyUpdate, liveConfig, newSession } from '../../src/http/realtime/session.js';
import { clipPcm24, RealtimeClient, wsURL } from '../support/realtime-client.js';
import { startTestServer, type TestServer } from '../support/server.js';

const models = { served: 'mega-asr', aliases: ['gpt-4o-transcribe'] };

describe('the live configuration of a transcription session', () => {
  it('unsets the language and context that a session.update removes (LiveSession.configure merges what it gets)', () => {
    const set = applyUpdate(newSession(models), { type: 'transcription', audio: { input: { transcription: { language: 'en', prompt: 'Weather.', keywords: ['Oslo'] } } } }, models);
    expect(liveConfig(set)).toMatchObject({ language: 'English', context: 'Weather.\nKeywords: Oslo' });
    const unset = applyUpdate(set, { type: 'transcription', audio: { input: { transcription: { language: null, prompt: '', keywords: [] } } } }, models);
    expect(unset.audio.input.transcription).not.toHaveProperty('language');
    // merged over the previous configuration, as LiveSession.configure does, nothing of the old one is left
    const merged = { ...liveConfig(set), ...liveConfig(unset) };
    expect(merged.language).toBeUndefined();
    expect(merged.context).toBeUndefined();
  });
});

describe('live turns under a short ASR_CHUNK_SECONDS', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ ASR_CHUNK_SECONDS: '3' });
  });
  afterAll(async () => {
    await server?.stop('test done');
  });

  it('are committed at the chunk limit, so every turn is transcribed instead of refused as too long', async () => {
    const client = await RealtimeClient.connect(wsURL(server.baseURL));
    await client.next('session.created');
    client.send({ type: 'session.update', session: { type: 'transcription', audio: { input: { turn_detection: null } } } });
    await client.next('session.updated');
    const pcm = clipPcm24('noise');
    await client.stream(pcm.subarray(0, 2 * 24000 * 5), { bytesPerSecond: 48000, speed: Infinity });
    client.send({ type: 'input_audio_buffer.commit' });
    // each turn ends with conversation.item.done, after its completed (or failed)
    await client.next('conversation.item.done');
    expect(client.types()).not.toContain('conversation.item.input_audio_transcription.failed');
    await client.next('conversation.item.done');
    expect(client.types()).not.toContain('conversation.item.input_audio_transcription.failed');
    expect(client.types().filter((t) => t === 'input_audio_buffer.committed')).toHaveLength(2);
    expect(client.types().filter((t) => t === 'conversation.item.input_audio_transcription.completed')).toHaveLength(2);
    client.socket.close();
    await client.closed;
  });
});
