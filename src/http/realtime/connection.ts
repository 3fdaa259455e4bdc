import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { LiveError, type LiveConfig, type LiveErrorCode, type LiveEvent, type LiveListener, type LiveStats } from '../../live/types.js';
import type { Metrics } from '../../metrics.js';
import type { ModelIds } from '../transcription-request.js';
import type { ClientEvent } from './client-events.js';
import { EventError } from './event-error.js';
import { parseClientEvent } from './parse.js';
import { errorEvent, serverEvent, userAudioItem, type ServerEvent, type ServerEventBody } from './server-events.js';
import { applyUpdate, bytesPerSecond, liveConfig, newSession, type TranscriptionSession } from './session.js';

/** What a connection drives: a live session of src/live, seen through the methods the protocol needs. */
export interface LiveTurns {
  append(audio: Uint8Array): void;
  commit(): void;
  clear(): void;
  configure(config: Partial<LiveConfig>): void;
  /** ends the session at once: in-flight transcriptions are cancelled */
  close(): void;
  readonly stats: LiveStats;
}

export type OpenLive = (config: Omit<LiveConfig, 'partialSeconds'>, listener: LiveListener) => LiveTurns;

export interface ConnectionLimits {
  /** no client event for this long: the session is closed */
  idleSeconds: number;
  /** decoded audio bytes one append may carry */
  maxAppendBytes: number;
  /** client events beyond this in one second are refused (appends among them dropped) */
  maxEventsPerSecond: number;
}

export interface ConnectionOptions {
  models: ModelIds;
  metrics: Metrics;
  limits: ConnectionLimits;
  log: FastifyBaseLogger;
}

/** Close codes (RFC 6455 section 7.4.1, and IANA's registry for 1012-1014). */
export const CLOSE = { normal: 1000, goingAway: 1001, policy: 1008, tryAgainLater: 1013 } as const;

/** A client that reads nothing while events pile up beyond this is cut off. */
const MAX_UNSENT_BYTES = 8 * 1024 * 1024;
/** how long a closing handshake may take before the socket is cut */
const CLOSE_HANDSHAKE_MS = 2000;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * One realtime transcription session on one WebSocket: OpenAI's client events in, a live session's domain events
 * out as OpenAI's server events. Every bad input is answered with an `error` event and touches nothing else; the
 * live session (and with it every in-flight transcription) ends the moment the socket does.
 */
export class RealtimeConnection {
  private session: TranscriptionSession;
  private live: LiveTurns | undefined;
  private readonly idle: NodeJS.Timeout;
  private window = { start: 0, events: 0, warned: false };
  /** committed turns whose transcription has not ended, with the item before each */
  private readonly pending = new Map<string, string | null>();
  private settledWaiters: Array<() => void> = [];
  private closing = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly o: ConnectionOptions,
  ) {
    this.session = newSession(o.models);
    this.idle = setTimeout(() => this.idleOut(), o.limits.idleSeconds * 1000);
    this.idle.unref();
    socket.on('message', (data, isBinary) => this.receive(data as Buffer, isBinary));
    socket.once('close', () => this.closed());
  }

  /** Opens the live session and greets the client with `session.created`. */
  start(openLive: OpenLive): void {
    this.live = openLive(liveConfig(this.session), (e) => this.fromLive(e));
    this.o.metrics.realtimeSessions.inc();
    this.send({ type: 'session.created', session: this.session });
  }

  /** Refuses the connection: an `error` event, then a close with `code` and `reason`. */
  refuse(error: EventError, code: number, reason: string): void {
    this.send(errorEvent(error));
    this.close(code, reason);
  }

  /**
   * Server shutdown: no more input; turns already committed may finish within `graceMs` (their `completed` or
   * `failed` is sent), then the socket closes with 1001.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    if (this.pending.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.settledWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.close(CLOSE.goingAway, 'the server is shutting down');
  }

  private receive(data: Buffer, isBinary: boolean): void {
    this.idle.refresh();
    if (!this.withinRate(data)) return;
    if (isBinary) {
      this.send(errorEvent(new EventError('Binary frames are not part of this protocol: send JSON text events (audio goes base64 in input_audio_buffer.append).', 'invalid_event')));
      return;
    }
    let event: ClientEvent;
    try {
      event = parseClientEvent(data.toString('utf8'));
      if (this.closing) throw new EventError('The server is shutting down; the session takes no more input.', 'session_closing', null, 'server_error');
      this.handle(event);
    } catch (err) {
      this.report(err);
    }
  }

  private handle(event: ClientEvent): void {
    const id = event.event_id ?? null;
    const live = this.live!;
    try {
      switch (event.type) {
        case 'session.update': {
          const next = applyUpdate(this.session, event.session, this.o.models);
          live.configure(liveConfig(next));
          this.session = next;
          this.send({ type: 'session.updated', session: this.session });
          return;
        }
        case 'input_audio_buffer.append':
          live.append(this.audio(event.audio));
          return;
        case 'input_audio_buffer.commit':
          live.commit();
          return;
        case 'input_audio_buffer.clear':
          live.clear();
          return;
      }
    } catch (err) {
      throw err instanceof EventError ? err.about(id) : err instanceof LiveError ? fromLiveError(err).about(id) : err;
    }
  }

  /** The append's audio bytes, checked: base64 and within the size limit (a sample split across appends is fine). */
  private audio(base64: string): Buffer {
    const { maxAppendBytes } = this.o.limits;
    // Refused before decoding when the text alone is too long for the limit.
    if (base64.length > Math.ceil(maxAppendBytes / 3) * 4) {
      this.drop('too_large', Math.floor((base64.length * 3) / 4));
      throw new EventError(`The append carries more than ${maxAppendBytes} bytes of audio; send it in smaller appends.`, 'audio_too_large', 'audio');
    }
    if (base64.length % 4 !== 0 || !BASE64.test(base64)) throw new EventError('The audio is not valid base64.', 'invalid_audio', 'audio');
    const bytes = Buffer.from(base64, 'base64');
    if (bytes.length > maxAppendBytes) {
      this.drop('too_large', bytes.length);
      throw new EventError(`The append carries ${bytes.length} bytes of audio, more than ${maxAppendBytes}; send it in smaller appends.`, 'audio_too_large', 'audio');
    }
    return bytes;
  }

  /** At most maxEventsPerSecond events a second; beyond, one `error` a second and the audio is dropped. */
  private withinRate(data: Buffer): boolean {
    const now = performance.now();
    if (now - this.window.start >= 1000) this.window = { start: now, events: 0, warned: false };
    if (++this.window.events <= this.o.limits.maxEventsPerSecond) return true;
    // Not parsed: a flood costs a counter. An append's size is its frame's, near enough.
    this.drop('rate_limited', Math.floor((data.length * 3) / 4));
    if (!this.window.warned) {
      this.window.warned = true;
      this.send(
        errorEvent(
          new EventError(
            `More than ${this.o.limits.maxEventsPerSecond} events in a second: events are refused (audio dropped) for the rest of the second. Send audio in fewer, larger appends (20-100 ms each).`,
            'rate_limit_exceeded',
            null,
            'rate_limit_exceeded',
          ),
        ),
      );
    }
    return false;
  }

  private drop(reason: 'too_large' | 'rate_limited', bytes: number): void {
    this.o.metrics.droppedAudioSeconds.inc({ reason }, bytes / bytesPerSecond(this.session.audio.input.format));
  }

  private fromLive(e: LiveEvent): void {
    const m = this.o.metrics;
    switch (e.type) {
      case 'speechStarted':
        return this.send({ type: 'input_audio_buffer.speech_started', audio_start_ms: e.audioStartMs, item_id: e.itemId });
      case 'speechStopped':
        return this.send({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: e.audioEndMs, item_id: e.itemId });
      case 'committed':
        this.pending.set(e.itemId, e.previousItemId);
        this.send({ type: 'input_audio_buffer.committed', item_id: e.itemId, previous_item_id: e.previousItemId });
        return this.send({ type: 'conversation.item.added', item: userAudioItem(e.itemId), previous_item_id: e.previousItemId });
      case 'delta':
        if (e.latencyMs !== undefined) m.partialLatency.observe(e.latencyMs / 1000);
        return this.send({ type: 'conversation.item.input_audio_transcription.delta', item_id: e.itemId, content_index: 0, delta: e.text });
      case 'completed': {
        m.finalLatency.observe(e.finalLatencyMs / 1000);
        m.audioSeconds.inc(e.audioSeconds);
        const u = e.usage;
        this.send({
          type: 'conversation.item.input_audio_transcription.completed',
          item_id: e.itemId,
          content_index: 0,
          transcript: e.transcript,
          usage: {
            type: 'tokens',
            input_tokens: u.inputTokens,
            output_tokens: u.outputTokens,
            total_tokens: u.inputTokens + u.outputTokens,
            input_token_details: { audio_tokens: u.audioTokens, text_tokens: u.inputTokens - u.audioTokens },
          },
        });
        return this.settle(e.itemId, e.transcript);
      }
      case 'failed':
        this.send({
          type: 'conversation.item.input_audio_transcription.failed',
          item_id: e.itemId,
          content_index: 0,
          error: { type: 'server_error', code: 'transcription_failed', message: e.message },
        });
        return this.settle(e.itemId);
      case 'cleared':
        return this.send({ type: 'input_audio_buffer.cleared' });
      case 'error':
        if (e.code) return this.send(errorEvent(fromLiveError(new LiveError(e.code, e.message))));
        this.o.log.warn({ message: e.message }, 'live session could not process audio');
        return this.send(errorEvent(new EventError(`Some audio could not be processed: ${e.message}`, 'audio_processing_failed', null, 'server_error')));
      default:
        return unreachable(e);
    }
  }

  /** The turn's transcription is over: its item is final (`conversation.item.done`, with the transcript). */
  private settle(itemId: string, transcript?: string): void {
    this.send({ type: 'conversation.item.done', item: userAudioItem(itemId, transcript), previous_item_id: this.pending.get(itemId) ?? null });
    this.pending.delete(itemId);
    if (this.pending.size > 0) return;
    for (const resolve of this.settledWaiters.splice(0)) resolve();
  }

  private idleOut(): void {
    const s = this.o.limits.idleSeconds;
    this.refuse(new EventError(`No client event for ${s} s: the session is closed.`, 'idle_timeout'), CLOSE.normal, `idle for ${s} s`);
  }

  private report(err: unknown): void {
    if (err instanceof EventError) {
      this.send(errorEvent(err));
      return;
    }
    this.o.log.error({ err }, 'realtime event failed');
    this.send(errorEvent(new EventError('The server had an error while processing the event.', 'internal_error', null, 'server_error')));
  }

  private send(event: ServerEvent | ServerEventBody): void {
    if (this.socket.readyState !== this.socket.OPEN) return;
    if (this.socket.bufferedAmount > MAX_UNSENT_BYTES) {
      this.close(CLOSE.policy, 'the client is not reading its events');
      return;
    }
    this.socket.send(JSON.stringify('event_id' in event ? event : serverEvent(event)));
  }

  private close(code: number, reason: string): void {
    this.closing = true;
    if (this.socket.readyState === this.socket.OPEN) this.socket.close(code, reason);
    // A client that never answers the closing handshake is cut, so its socket cannot outlive the session.
    setTimeout(() => this.socket.terminate(), CLOSE_HANDSHAKE_MS).unref();
  }

  /** The socket is gone (either side): free everything now. */
  private closed(): void {
    clearTimeout(this.idle);
    this.closing = true;
    if (!this.live) return;
    this.live.close();
    this.o.metrics.realtimeSessions.dec();
    const { stats } = this.live;
    this.o.log.info({ session: this.session.id, ...stats, unfinishedTurns: this.pending.size }, 'realtime session closed');
    const dropped = stats.droppedSeconds;
    if (dropped > 0) this.o.metrics.droppedAudioSeconds.inc({ reason: 'backlog' }, dropped);
    for (const resolve of this.settledWaiters.splice(0)) resolve();
  }
}

const LIVE_ERRORS: Record<LiveErrorCode, (message: string) => EventError> = {
  buffer_too_small: (m) => new EventError(m, 'input_audio_buffer_commit_empty'),
  turn_detection_unavailable: (m) => new EventError(m, 'unsupported_turn_detection', 'session.audio.input.turn_detection'),
  invalid_config: (m) => new EventError(m, 'invalid_value', 'session.audio.input.turn_detection'),
  closed: (m) => new EventError(m, 'session_closed', null, 'server_error'),
};

const fromLiveError = (e: LiveError) => LIVE_ERRORS[e.code](e.message);

/** A live event this switch does not know fails the type check here, not silently at run time. */
function unreachable(e: never): void {
  throw new Error(`unhandled live event ${(e as { type: string }).type}`);
}
