import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import type { Metrics } from '../../metrics.js';
import type { ModelIds } from '../transcription-request.js';
import { CLOSE, RealtimeConnection, type ConnectionLimits, type OpenLive } from './connection.js';
import { EventError } from './event-error.js';

/** After the grace, how long a cancelled transcription may take to come back (it stops between decode steps). */
const CANCEL_SETTLE_MS = 2000;

export interface RealtimeSessionsOptions {
  /** MAX_REALTIME_SESSIONS */
  maxSessions: number;
  limits: ConnectionLimits;
  models: ModelIds;
  metrics: Metrics;
}

/**
 * Every open realtime session, within the budget. A connection beyond it (or before the model is ready, or
 * while the server drains) is upgraded, told why in an `error` event and closed with a code that says so.
 */
export class RealtimeSessions {
  private readonly open = new Set<RealtimeConnection>();
  private openLive: OpenLive | undefined;
  private draining = false;

  constructor(private readonly o: RealtimeSessionsOptions) {}

  /** Live sessions can be opened from now on (the model is loaded and warm). */
  attach(openLive: OpenLive): void {
    this.openLive = openLive;
  }

  accept(socket: WebSocket, log: FastifyBaseLogger): void {
    const connection = new RealtimeConnection(socket, { models: this.o.models, metrics: this.o.metrics, limits: this.o.limits, log });
    const refusal = this.refusal();
    if (refusal) {
      this.o.metrics.realtimeRefused.inc({ reason: refusal.reason });
      log.info({ reason: refusal.reason, open: this.open.size }, 'realtime session refused');
      connection.refuse(refusal.error, refusal.code, refusal.closeReason);
      return;
    }
    this.open.add(connection);
    socket.once('close', () => this.open.delete(connection));
    connection.start(this.openLive!);
  }

  /**
   * Shutdown: no new sessions; each open one finishes its committed turns within `graceMs` (the pool cancels
   * what is still running then, and the turn's `failed` follows), then closes (1001).
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    await Promise.all([...this.open].map((c) => c.shutdown(graceMs + CANCEL_SETTLE_MS)));
  }

  private refusal() {
    if (this.draining) {
      return {
        reason: 'draining',
        code: CLOSE.goingAway,
        closeReason: 'the server is shutting down',
        error: new EventError('The server is shutting down; connect again (to another instance).', 'service_unavailable', null, 'server_error'),
      } as const;
    }
    if (!this.openLive) {
      return {
        reason: 'not_ready',
        code: CLOSE.tryAgainLater,
        closeReason: 'the model is still loading',
        error: new EventError('The model is still loading; connect again in a few seconds.', 'service_unavailable', null, 'server_error'),
      } as const;
    }
    if (this.open.size >= this.o.maxSessions) {
      const max = this.o.maxSessions;
      return {
        reason: 'max_sessions',
        code: CLOSE.tryAgainLater,
        closeReason: max === 0 ? 'live transcription is turned off here' : `all ${max} realtime sessions are in use`,
        error: new EventError(
          max === 0
            ? 'Live transcription is turned off on this server (MAX_REALTIME_SESSIONS=0).'
            : `All ${max} realtime sessions of this server are in use; connect again later.`,
          'too_many_sessions',
          null,
          'rate_limit_exceeded',
        ),
      } as const;
    }
    return undefined;
  }
}
