/**
 * A problem to report to the client as an `error` server event (RealtimeErrorEvent / RealtimeError in the
 * `openai` SDK's resources/realtime/realtime.d.ts): OpenAI's error type, a code, a message meant for the
 * client, the offending parameter and the client event's own `event_id`, when it had one.
 */
export class EventError extends Error {
  override name = 'EventError';

  constructor(
    message: string,
    readonly code: string,
    readonly param: string | null = null,
    readonly type: 'invalid_request_error' | 'server_error' | 'rate_limit_exceeded' = 'invalid_request_error',
    readonly eventId: string | null = null,
  ) {
    super(message);
  }

  /** The same error, naming the client event it answers. */
  about(eventId: string | null): EventError {
    return new EventError(this.message, this.code, this.param, this.type, eventId);
  }
}
