import { z } from 'zod';

/**
 * The client events of OpenAI's GA Realtime API that a transcription session takes, as zod schemas.
 * Field names follow the `openai` SDK (resources/realtime/realtime.d.ts: SessionUpdateEvent,
 * RealtimeTranscriptionSessionCreateRequest, AudioTranscription, RealtimeAudioFormats,
 * RealtimeTranscriptionSessionAudioInputTurnDetection, InputAudioBufferAppendEvent/CommitEvent/ClearEvent).
 * Objects are loose: fields we do not use (and ones OpenAI adds later) are ignored, never refused.
 */

const eventId = z.string().max(512).optional();

/** Shapes only: which values are supported is decided in session.ts, with a message that names them. */
const audioFormat = z.looseObject({ type: z.string().max(64).optional(), rate: z.number().optional() });

const transcription = z.looseObject({
  model: z.string().min(1).max(256).optional(),
  language: z.string().max(64).nullable().optional(),
  prompt: z.string().max(4000).optional(),
  keywords: z.array(z.string().max(200)).max(100).optional(),
});

const turnDetection = z.looseObject({
  type: z.string().max(64),
  threshold: z.number().gt(0).lt(1).optional(),
  prefix_padding_ms: z.number().int().min(0).max(5000).optional(),
  silence_duration_ms: z.number().int().min(0).max(10000).optional(),
});

const noiseReduction = z.looseObject({
  type: z.enum(['near_field', 'far_field']).optional(),
  strength: z.number().min(0).max(1).optional(),
});

const sessionUpdateSchema = z.looseObject({
  type: z.literal('session.update'),
  event_id: eventId,
  session: z.looseObject({
    type: z.string().max(64),
    audio: z
      .looseObject({
        input: z
          .looseObject({
            format: audioFormat.optional(),
            transcription: transcription.nullable().optional(),
            turn_detection: turnDetection.nullable().optional(),
            noise_reduction: noiseReduction.nullable().optional(),
          })
          .optional(),
      })
      .optional(),
    include: z.array(z.string().max(256)).max(16).nullable().optional(),
  }),
});

const appendSchema = z.looseObject({
  type: z.literal('input_audio_buffer.append'),
  event_id: eventId,
  audio: z.string(),
});

const commitSchema = z.looseObject({ type: z.literal('input_audio_buffer.commit'), event_id: eventId });
const clearSchema = z.looseObject({ type: z.literal('input_audio_buffer.clear'), event_id: eventId });

export type SessionUpdateEvent = z.infer<typeof sessionUpdateSchema>;
export type SessionUpdate = SessionUpdateEvent['session'];
type AppendEvent = z.infer<typeof appendSchema>;
export type TurnDetectionUpdate = z.infer<typeof turnDetection>;

export type ClientEvent =
  | SessionUpdateEvent
  | AppendEvent
  | z.infer<typeof commitSchema>
  | z.infer<typeof clearSchema>;

export const CLIENT_EVENT_SCHEMAS = {
  'session.update': sessionUpdateSchema,
  'input_audio_buffer.append': appendSchema,
  'input_audio_buffer.commit': commitSchema,
  'input_audio_buffer.clear': clearSchema,
} as const;

/** Other GA client events (RealtimeClientEvent): real, but for conversation sessions with a model that answers. */
export const CONVERSATION_ONLY_EVENTS = new Set([
  'conversation.item.create',
  'conversation.item.delete',
  'conversation.item.retrieve',
  'conversation.item.truncate',
  'output_audio_buffer.clear',
  'response.cancel',
  'response.create',
]);
