import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import multipart from '@fastify/multipart';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Config } from '../config.js';
import type { Metrics } from '../metrics.js';
import { bearerAuth } from './auth.js';
import type { TranscriptionBackend } from './backend.js';
import { ApiError, clientErrorResponse, toApiError } from './errors.js';
import { answerExpectContinue } from './expect-continue.js';
import { realtimeSubprotocol, wsMaxPayload } from './realtime/handshake.js';
import { realtimeRoutes } from './realtime/route.js';
import type { RealtimeSessions } from './realtime/sessions.js';
import { modelRoutes } from './routes/models.js';
import { operationsRoutes } from './routes/operations.js';
import { pageRoutes } from './routes/page.js';
import { transcriptionRoutes } from './routes/transcriptions.js';
import { guardUpload } from './upload-guard.js';

export interface AppOptions {
  config: Pick<
    Config,
    | 'API_KEYS'
    | 'MAX_UPLOAD_BYTES'
    | 'SERVED_MODEL_ID'
    | 'MODEL_ALIASES'
    | 'REALTIME_MAX_APPEND_BYTES'
    | 'TLS_CERT'
    | 'TLS_KEY'
    | 'UPLOAD_IDLE_SECONDS'
    | 'UPLOAD_MIN_BYTES_PER_SECOND'
    | 'UPLOAD_RATE_GRACE_SECONDS'
    | 'HEADERS_TIMEOUT_SECONDS'
    | 'MAX_UPLOADS'
  >;
  backend: TranscriptionBackend;
  /** the realtime sessions' budget and registry (GET /v1/realtime) */
  realtime: RealtimeSessions;
  metrics: Metrics;
  logger: FastifyBaseLogger;
}

/** openapi.yaml sits at the repository top, two folders above src/http and dist/http alike. */
const OPENAPI_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'openapi.yaml');
/** The page's static files, in web/ beside it. */
const WEB_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');

/** A caller's x-request-id is kept when it is sane, so logs join up across services; otherwise we make one. */
function requestId(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : `req_${randomUUID().replaceAll('-', '')}`;
}

export async function buildApp(o: AppOptions): Promise<FastifyInstance> {
  // Headers must be complete within HEADERS_TIMEOUT_SECONDS (408), checked every second rather than Node's 30 s.
  // requestTimeout stays off (Fastify's 0): bodies are bounded by the upload guard's idle and rate limits
  // instead, which never cut a slow but steady upload of a large file.
  const server = { headersTimeout: o.config.HEADERS_TIMEOUT_SECONDS * 1000, connectionsCheckingInterval: 1000 };
  const app = Fastify({
    ...(o.config.TLS_CERT && o.config.TLS_KEY
      ? { https: { ...server, cert: readFileSync(o.config.TLS_CERT), key: readFileSync(o.config.TLS_KEY) } }
      : { http: server }),
    loggerInstance: o.logger,
    genReqId: requestId,
    // Requests during shutdown still reach our routes, which answer with OpenAI-shaped 503s.
    return503OnClosing: false,
    bodyLimit: 1024 * 1024,
    // Errors Fastify raises before routing (a malformed URL, ...) get the same OpenAI body as the rest.
    frameworkErrors: (err, req, reply) => {
      const api = toApiError(err, o.config.MAX_UPLOAD_BYTES);
      void (reply as unknown as FastifyReply).code(api.status).headers({ 'x-request-id': String(req.id) }).send(api.body());
    },
    clientErrorHandler: (err, socket) => {
      if (socket.writable) socket.end(clientErrorResponse(err));
      else socket.destroy(err);
    },
  });
  const maxUploadBytes = o.config.MAX_UPLOAD_BYTES;
  const uploadLimits = {
    idleSeconds: o.config.UPLOAD_IDLE_SECONDS,
    minBytesPerSecond: o.config.UPLOAD_MIN_BYTES_PER_SECOND,
    graceSeconds: o.config.UPLOAD_RATE_GRACE_SECONDS,
  };
  answerExpectContinue(app);
  const models = { served: o.config.SERVED_MODEL_ID, aliases: o.config.MODEL_ALIASES };

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
    const started = process.hrtime.bigint();
    // On 'close', so hijacked (streamed) and aborted responses are counted too.
    reply.raw.once('close', () => {
      const route = req.routeOptions.url ?? 'unmatched';
      // A response that never completed was abandoned by its client: 499, as nginx counts it. An upgraded
      // WebSocket has no HTTP response to complete: 101, and its session's length is no request duration.
      const upgraded = !reply.raw.writableFinished && req.ws;
      const status = reply.raw.writableFinished ? String(reply.raw.statusCode) : upgraded ? '101' : '499';
      o.metrics.requests.inc({ route, method: req.method, status, format: req.responseFormat ?? '' });
      if (!upgraded) o.metrics.requestDuration.observe({ route, method: req.method }, Number(process.hrtime.bigint() - started) / 1e9);
    });
    guardUpload(req, reply, uploadLimits, (reason) => {
      o.metrics.uploadTimeouts.inc({ reason });
      req.log.info({ reason, bytesRead: req.socket.bytesRead }, 'upload cut');
    });
  });

  app.setErrorHandler((err, req, reply) => {
    const api = toApiError(err, maxUploadBytes);
    // Refusals while draining or loading are expected; only real failures are errors.
    if (api.status >= 500 && api.code !== 'service_unavailable') req.log.error({ err }, 'request failed');
    else req.log[api.status >= 500 ? 'warn' : 'info']({ status: api.status, code: api.code, param: api.param }, api.message);
    if (api.status === 499) return reply; // the client is gone: nothing to send
    return reply.status(api.status).headers(api.headers).send(api.body());
  });

  app.setNotFoundHandler((req) => {
    throw new ApiError(404, `Invalid URL (${req.method} ${req.url.split('?')[0]})`, 'invalid_request_error', 'not_found');
  });

  // Over-size files throw (413) instead of arriving silently truncated.
  await app.register(multipart, { throwFileSizeLimit: true });
  await app.register(websocket, {
    options: { maxPayload: wsMaxPayload(o.config.REALTIME_MAX_APPEND_BYTES), handleProtocols: realtimeSubprotocol },
    // Sessions are drained (and closed with 1001) before the app closes; anything left is cut here.
    preClose(done) {
      for (const client of this.websocketServer.clients) client.close(1001, 'the server is shutting down');
      done();
    },
  });
  await app.register(operationsRoutes, { backend: o.backend, metrics: o.metrics, openapiPath: OPENAPI_PATH });
  await app.register(pageRoutes, { root: WEB_ROOT });
  await app.register(
    async (v1) => {
      v1.addHook('onRequest', bearerAuth(o.config.API_KEYS));
      await v1.register(modelRoutes, { models, created: Math.floor(Date.now() / 1000) });
      await v1.register(transcriptionRoutes, {
        backend: o.backend,
        metrics: o.metrics,
        models,
        maxUploadBytes,
        maxUploads: o.config.MAX_UPLOADS,
        // a stalled upload keeps its slot for at most the idle limit
        uploadRetrySeconds: Math.min(60, Math.max(1, Math.ceil(o.config.UPLOAD_IDLE_SECONDS))),
      });
      await v1.register(realtimeRoutes, { sessions: o.realtime });
    },
    { prefix: '/v1' },
  );
  return app;
}
