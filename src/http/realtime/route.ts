import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../errors.js';
import type { RealtimeSessions } from './sessions.js';

export interface RealtimeRouteOptions {
  sessions: RealtimeSessions;
}

/**
 * Before the upgrade: only transcription sessions are served, so `intent=transcription` is required and a
 * conversation session (`?model=...`) is refused with a 400 the client can read.
 */
function transcriptionIntent(req: FastifyRequest): void {
  const { intent, model } = req.query as Record<string, string | undefined>;
  if (intent === 'transcription') return;
  const why =
    intent !== undefined
      ? `Unsupported intent '${String(intent).slice(0, 64)}'.`
      : model !== undefined
        ? 'Conversation sessions (?model=...) are not served: there is no model that answers.'
        : 'The intent is missing.';
  throw new ApiError(400, `${why} This server serves realtime transcription: connect to /v1/realtime?intent=transcription.`, 'invalid_request_error', 'unsupported_intent', 'intent');
}

/** `GET /v1/realtime?intent=transcription`, upgraded to a WebSocket (auth runs before, in the /v1 scope). */
export async function realtimeRoutes(app: FastifyInstance, o: RealtimeRouteOptions): Promise<void> {
  app.route({
    method: 'GET',
    url: '/realtime',
    preHandler: async (req) => transcriptionIntent(req),
    handler: async () => {
      throw new ApiError(426, 'This endpoint speaks the Realtime protocol over a WebSocket: connect with an Upgrade: websocket request.', 'invalid_request_error', 'upgrade_required', null, {
        upgrade: 'websocket',
      });
    },
    wsHandler: (socket, req) => o.sessions.accept(socket, req.log),
  });
}
