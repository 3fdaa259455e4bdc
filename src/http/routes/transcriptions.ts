import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Metrics } from '../../metrics.js';
import type { Transcription } from '../../pool/result.js';
import type { Admission, TranscriptionBackend } from '../backend.js';
import { ApiError, serverStopped, toApiError, tooManyUploads } from '../errors.js';
import { sendContinue } from '../expect-continue.js';
import { SSE_DONE, deltaEvent, doneEvent, renderTranscription, sseEvent } from '../formats.js';
import { readTranscriptionRequest, type ModelIds } from '../transcription-request.js';

export interface TranscriptionRouteOptions {
  backend: TranscriptionBackend;
  metrics: Metrics;
  models: ModelIds;
  maxUploadBytes: number;
  /** bodies read at once; one more is refused with 429 before its body */
  maxUploads: number;
  /** Retry-After for a refusal because every upload slot is taken: about how long a stalled one may hold its slot */
  uploadRetrySeconds: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** response_format, for the request metrics */
    responseFormat?: string;
  }
}

/** Multipart framing around the file: a Content-Length beyond limit + this cannot be a valid upload. */
const MULTIPART_OVERHEAD_BYTES = 1024 * 1024;

/**
 * Before the body is read (the multipart body is only read by req.parts()): refuse what cannot succeed, so an
 * overloaded service refuses cheaply (429, or 503 when draining), before a client waiting for `100 Continue`
 * sends a byte. The queue place itself is taken once the body has arrived (admit), so a slow upload never holds one.
 */
function checkBeforeBody(o: TranscriptionRouteOptions, req: FastifyRequest): void {
  // From the header: @fastify/multipart only marks the request once its body parser has run.
  if (!/^multipart\/form-data\b/i.test(req.headers['content-type'] ?? '')) {
    throw new ApiError(400, "Expected a multipart/form-data body with the audio in the 'file' field", 'invalid_request_error', 'invalid_content_type');
  }
  if (Number(req.headers['content-length']) > o.maxUploadBytes + MULTIPART_OVERHEAD_BYTES) {
    throw new ApiError(413, `Maximum content size limit (${o.maxUploadBytes}) exceeded`, 'invalid_request_error', 'file_too_large', 'file');
  }
  // The admission's own decision, its place given back at once: is there room now?
  admit(o).release();
}

/** A queue place (429 when every place is taken, 503 while draining or loading). */
function admit(o: TranscriptionRouteOptions): Admission {
  const admission = o.backend.admit();
  if (!('refused' in admission)) return admission;
  o.metrics.rejections.inc({ reason: admission.refused });
  const retry = { 'retry-after': String(admission.retryAfterSeconds) };
  if (admission.refused === 'queue_full') {
    throw new ApiError(429, 'The server is at capacity; retry after the delay in Retry-After.', 'rate_limit_exceeded', 'queue_full', null, retry);
  }
  const why = admission.refused === 'draining' ? 'The server is shutting down.' : 'The model is still loading.';
  throw new ApiError(503, `${why} Retry after the delay in Retry-After.`, 'server_error', 'service_unavailable', null, retry);
}

/** Aborted when the client goes away before its response is complete (also if it already has). */
function watchClient(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  if (reply.raw.destroyed) gone.abort();
  reply.raw.once('close', () => {
    if (!reply.raw.writableEnded) gone.abort();
  });
  return gone.signal;
}

export async function transcriptionRoutes(app: FastifyInstance, o: TranscriptionRouteOptions): Promise<void> {
  /** Runs the work, counting its outcome; a failure while draining is the shutdown's doing, not the engine's. */
  const run = async (admission: Admission, pcm: Float32Array, call: Parameters<TranscriptionBackend['transcribe']>[2]): Promise<Transcription> => {
    let result: Transcription;
    try {
      result = await o.backend.transcribe(admission, pcm, call);
    } catch (err) {
      o.metrics.outcomes.inc({ outcome: 'failed' });
      throw o.backend.stats.draining ? serverStopped() : err;
    }
    const t = result.timings;
    o.metrics.audioSeconds.inc(result.duration);
    if (result.duration > 0) o.metrics.realTimeFactor.observe((t.featuresMs + t.encoderMs + t.prefillMs + t.stepsMs) / 1000 / result.duration);
    o.metrics.decodedTokens.inc(result.usage.generatedTokens);
    o.metrics.outcomes.inc({ outcome: result.cancelled ? 'cancelled' : result.truncated ? 'truncated' : 'completed' });
    return result;
  };

  // Bodies being read: each holds up to MAX_UPLOAD_BYTES in memory, so their number is bounded.
  let uploading = 0;
  const readBody = async (req: FastifyRequest, reply: FastifyReply) => {
    checkBeforeBody(o, req);
    if (uploading >= o.maxUploads) {
      o.metrics.rejections.inc({ reason: 'uploads_full' });
      throw tooManyUploads(o.uploadRetrySeconds);
    }
    o.metrics.uploadsInProgress.set(++uploading);
    try {
      // A client sending `Expect: 100-continue` hears the answer to the checks above before it sends the body.
      sendContinue(req, reply);
      return await readTranscriptionRequest(req, { maxUploadBytes: o.maxUploadBytes }, o.models);
    } catch (err) {
      if (reply.sent) return undefined; // the upload guard cut the body and has answered (408)
      throw err;
    } finally {
      o.metrics.uploadsInProgress.set(--uploading);
    }
  };

  app.post('/audio/transcriptions', { config: { continueAfterAdmission: true } }, async (req, reply) => {
    const clientGone = watchClient(reply);
    const t = await readBody(req, reply);
    if (!t) return reply;
    req.responseFormat = t.responseFormat;
    const admission = admit(o);
    // The place is held until the work is over, even when the client has left: abandoned work still uses a worker.
    try {
      // Decoding refuses empty, too short and too long audio (AudioError -> 400) before any model work.
      const pcm = await o.backend.decode(t.audio).catch((err: unknown) => {
        throw o.backend.stats.draining ? serverStopped() : err;
      });
      const call = {
        ...(t.language ? { language: t.language } : {}),
        ...(t.prompt ? { context: t.prompt } : {}),
        signal: clientGone,
      };

      if (!t.stream) {
        const result = await run(admission, pcm, call);
        if (result.cancelReason === 'client') return reply; // nobody to answer
        if (result.cancelReason === 'shutdown') throw serverStopped();
        const { contentType, body } = renderTranscription(result, t.responseFormat);
        return reply.type(contentType).send(body);
      }

      // SSE: transcript.text.delta events as tokens are decoded, then transcript.text.done and [DONE].
      reply.hijack();
      reply.raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-request-id': req.id,
      });
      try {
        const result = await run(admission, pcm, { ...call, onDelta: (delta) => reply.raw.write(sseEvent(deltaEvent(delta))) });
        if (!result.cancelled) reply.raw.write(sseEvent(doneEvent(result)) + SSE_DONE);
        else if (result.cancelReason === 'shutdown') reply.raw.write(`event: error\n${sseEvent(serverStopped().body())}`);
      } catch (err) {
        const api = toApiError(err, o.maxUploadBytes);
        req.log.error({ err }, 'streamed transcription failed');
        // Once the event stream has started, an error can only be another event (the SDK raises it as an APIError).
        reply.raw.write(`event: error\n${sseEvent(api.body())}`);
      }
      reply.raw.end();
      return reply;
    } finally {
      admission.release();
    }
  });

  app.post('/audio/translations', async () => {
    throw new ApiError(
      400,
      'Mega-ASR transcribes speech in its own language and does not translate. Use POST /v1/audio/transcriptions; it detects the spoken language.',
      'invalid_request_error',
      'unsupported_task',
    );
  });
}
