import type { RealtimeClientEvent, RealtimeServerEvent } from 'openai/resources/realtime/realtime';
import { describe, expect, it } from 'vitest';
import { CLIENT_EVENT_SCHEMAS, type ClientEvent } from '../../src/http/realtime/client-events.js';
import { serverEvent, type ServerEvent } from '../../src/http/realtime/server-events.js';
import type { TranscriptionSession, WireFormat } from '../../src/http/realtime/session.js';

/**
 * Our wire types against the `openai` SDK's (resources/realtime/realtime.d.ts). The assignments below are
 * checked by the type checker (`npm run check`, which CI runs): a renamed, missing or mistyped field fails there.
 */
/** 16 kHz PCM is our extension (the SDK's AudioPCM rate is always 24000): the rest must be OpenAI's exactly. */
type OpenAiSession = TranscriptionSession<Exclude<WireFormat, { rate: 16000 }>>;
type SessionEvent = Extract<ServerEvent, { session: unknown }>;
type OpenAiServerEvent = Exclude<ServerEvent, SessionEvent> | (Omit<SessionEvent, 'session'> & { session: OpenAiSession });
const asSdkServerEvent = (e: OpenAiServerEvent): RealtimeServerEvent => e;
const asSdkClientEventType = (t: ClientEvent['type']): RealtimeClientEvent['type'] => t;

describe('the wire types match the openai SDK', () => {
  it('every server event we send is a RealtimeServerEvent, with an event_id', () => {
    const e = asSdkServerEvent(serverEvent({ type: 'input_audio_buffer.cleared' }) as OpenAiServerEvent);
    expect(e).toEqual({ type: 'input_audio_buffer.cleared', event_id: expect.stringMatching(/^event_/) });
  });

  it('every client event we take is one of RealtimeClientEvent', () => {
    expect(Object.keys(CLIENT_EVENT_SCHEMAS).map((t) => asSdkClientEventType(t as ClientEvent['type']))).toHaveLength(4);
  });
});
