import { randomBytes } from 'node:crypto';
import type { EventError } from './event-error.js';
import type { TranscriptionSession } from './session.js';

/**
 * The server events a transcription session sends, field for field as the `openai` SDK types them
 * (resources/realtime/realtime.d.ts; test/http/realtime-types.test.ts checks these against RealtimeServerEvent).
 * Each builder gives the event a new `event_id`.
 */
interface Base {
  event_id: string;
}

/** RealtimeConversationItemUserMessage holding the turn's audio (never sent back: only its transcript). */
export interface UserAudioItem {
  id: string;
  object: 'realtime.item';
  type: 'message';
  role: 'user';
  status: 'completed';
  /** the transcript once there is one (the SDK's Content.transcript is optional, never null) */
  content: Array<{ type: 'input_audio'; transcript?: string }>;
}

export interface TranscriptionUsage {
  type: 'tokens';
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  input_token_details: { audio_tokens: number; text_tokens: number };
}

export type ServerEvent = Base &
  (
    | { type: 'session.created' | 'session.updated'; session: TranscriptionSession }
    | { type: 'error'; error: { type: string; code: string | null; message: string; param: string | null; event_id: string | null } }
    | { type: 'input_audio_buffer.speech_started'; audio_start_ms: number; item_id: string }
    | { type: 'input_audio_buffer.speech_stopped'; audio_end_ms: number; item_id: string }
    | { type: 'input_audio_buffer.committed'; item_id: string; previous_item_id: string | null }
    | { type: 'input_audio_buffer.cleared' }
    | { type: 'conversation.item.added' | 'conversation.item.done'; item: UserAudioItem; previous_item_id: string | null }
    | { type: 'conversation.item.input_audio_transcription.delta'; item_id: string; content_index: number; delta: string }
    | {
        type: 'conversation.item.input_audio_transcription.completed';
        item_id: string;
        content_index: number;
        transcript: string;
        usage: TranscriptionUsage;
      }
    | {
        type: 'conversation.item.input_audio_transcription.failed';
        item_id: string;
        content_index: number;
        error: { type: string; code: string; message: string };
      }
  );

type WithoutId<E> = E extends unknown ? Omit<E, 'event_id'> : never;
export type ServerEventBody = WithoutId<ServerEvent>;

const newEventId = () => `event_${randomBytes(12).toString('base64url')}`;

export function serverEvent(body: ServerEventBody): ServerEvent {
  return { event_id: newEventId(), ...body } as ServerEvent;
}

export function errorEvent(e: EventError): ServerEvent {
  return serverEvent({
    type: 'error',
    error: { type: e.type, code: e.code, message: e.message, param: e.param, event_id: e.eventId },
  });
}

/** The committed turn as a conversation item: its one content part (content_index 0) is the audio. */
export function userAudioItem(id: string, transcript?: string): UserAudioItem {
  const content = { type: 'input_audio' as const, ...(transcript !== undefined ? { transcript } : {}) };
  return { id, object: 'realtime.item', type: 'message', role: 'user', status: 'completed', content: [content] };
}
