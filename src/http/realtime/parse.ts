import type { z } from 'zod';
import { CLIENT_EVENT_SCHEMAS, CONVERSATION_ONLY_EVENTS, type ClientEvent } from './client-events.js';
import { EventError } from './event-error.js';

const KNOWN = Object.keys(CLIENT_EVENT_SCHEMAS).join(', ');

/** One text frame -> a validated client event, or an EventError that says what is wrong with it. */
export function parseClientEvent(text: string): ClientEvent {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new EventError('The event is not valid JSON.', 'invalid_json');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new EventError('An event must be a JSON object with a string "type".', 'invalid_event');
  }
  const record = raw as Record<string, unknown>;
  const eventId = typeof record.event_id === 'string' ? record.event_id.slice(0, 512) : null;
  const type = record.type;
  if (typeof type !== 'string') throw new EventError('An event must have a string "type".', 'missing_required_parameter', 'type', undefined, eventId);
  if (type === 'transcription_session.update') {
    throw new EventError(
      "transcription_session.update is the beta protocol; send session.update with session.type 'transcription'.",
      'unsupported_event',
      'type',
      undefined,
      eventId,
    );
  }
  if (CONVERSATION_ONLY_EVENTS.has(type)) {
    throw new EventError(`${type} belongs to conversation sessions; a transcription session takes ${KNOWN}.`, 'unsupported_event', 'type', undefined, eventId);
  }
  const schema = (CLIENT_EVENT_SCHEMAS as Record<string, z.ZodType<ClientEvent>>)[type];
  if (!schema) throw new EventError(`Unknown event type '${type.slice(0, 64)}'; a transcription session takes ${KNOWN}.`, 'invalid_event', 'type', undefined, eventId);
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = issue.path.join('.') || null;
  const missing = issue.code === 'invalid_type' && getPath(raw, issue.path) === undefined;
  throw new EventError(
    missing ? `Missing required parameter '${param}'.` : `Invalid value for '${param}': ${issue.message}.`,
    missing ? 'missing_required_parameter' : 'invalid_value',
    param,
    undefined,
    eventId,
  );
}

function getPath(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const key of path) v = typeof v === 'object' && v !== null ? (v as Record<PropertyKey, unknown>)[key] : undefined;
  return v;
}
