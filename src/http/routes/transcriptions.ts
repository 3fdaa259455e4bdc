import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AudioError } from '../../audio/errors.js';
import type { TranscriptionResult } from '../../asr/transcribe.js';
import type { Metrics } from '../../metrics.js';
import type { Admission } from '../../pool/pool.js';
import type { TranscriptionBackend } from '../backend.js';
import { ApiError, toApiError } from '../errors.js';
import { SSE_DONE, deltaEvent, doneEvent, renderTranscription, sseEvent } from '../formats.js';
import { readTranscriptionRequest, type ModelIds, type TranscriptionRequest } from '../transcription-request.js';

export interface TranscriptionRouteOptions {
  backend: TranscriptionBackend;
  metrics: Metrics;
  models: ModelIds;
  maxUploadBytes: number;
}

/** OpenAI's minimum; shorter audio is refused before any model work. */
const MIN_AUDIO_SAMPLES = 1600;

declare module 'fastify' {
  interface FastifyRequest {
    admission?: Admission;
    /** response_format, for the request metrics */
    responseFormat?: string;
  }
}

/** Reserve a queue place before the body is read: an overloaded service refuses cheaply (429, or 503 when draining). */
function admit(backend: TranscriptionBackend, metrics: Metrics) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    // From the header: @fastify/multipart only marks the request once the body parser runs, after this hook.
    if (!/^multipart\/form-data\b/i.test(req.headers['content-type'] ?? '')) {
      throw new ApiError(400, "Expected a multipart/form-data body with the audio in the 'file' field", 'invalid_request_error', 'invalid_content_type');
    }
    const admission = backend.admit();
    if ('refused' in admission) {
      metrics.rejections.inc({ reason: admission.refused });
      const retry = { 'retry-after': String(admission.retryAfterSeconds) };
      if (admission.refused === 'queue_full') {
        throw new ApiError(429, 'The server is at capacity; retry after the delay in Retry-After.', 'rate_limit_exceeded', 'queue_full', null, retry);
      }
      const why = admission.refused === 'draining' ? 'The server is shutting down.' : 'The model is still loading.';
      throw new ApiError(503, `${why} Retry after the delay in Retry-After.`, 'server_error', 'service_unavailable', null, retry);
    }
    req.admission = admission;
    reply.raw.once('close', () => admission.release());
  };
}

function recordOutcome(metrics: Metrics, result: TranscriptionResult): void {
  const processingSeconds = (result.timings.featuresMs + result.timings.encoderMs + result.timings.prefillMs + result.timings.stepsMs) / 1000;
  metrics.audioSeconds.inc(result.duration);
  if (result.duration > 0) metrics.realTimeFactor.observe(processingSeconds / result.duration);
  metrics.decodedTokens.inc(result.usage.generatedTokens);
  metrics.outcomes.inc({ outcome: result.cancelled ? 'cancelled' : result.truncated ? 'truncated' : 'completed' });
}

async function decodeAudio(backend: TranscriptionBackend, t: TranscriptionRequest): Promise<Float32Array> {
  if (t.bytes.length === 0) throw new AudioError('audio_too_short', 'The uploaded file is empty.');
  const pcm = await backend.decode(t.bytes);
  if (pcm.length < MIN_AUDIO_SAMPLES) {
    throw new AudioError('audio_too_short', `Audio file is too short (${(pcm.length / 16000).toFixed(3)} s). Minimum audio length is 0.1 seconds.`);
  }
  return pcm;
}

/** A shutdown cancels work after the grace period; the client is told, not given a partial text as if complete. */
const cancelledByServer = () => new ApiError(503, 'The server shut down before the transcription finished; retry.', 'server_error', 'service_unavailable');

export async function transcriptionRoutes(app: FastifyInstance, o: TranscriptionRouteOptions): Promise<void> {
  app.post('/audio/transcriptions', { onRequest: admit(o.backend, o.metrics) }, async (req, reply) => {
    const t = await readTranscriptionRequest(req, { maxUploadBytes: o.maxUploadBytes }, o.models);
    req.responseFormat = t.responseFormat;
    const pcm = await decodeAudio(o.backend, t);
    const clientGone = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableEnded) clientGone.abort();
    });
    const call = {
      ...(t.language ? { language: t.language } : {}),
      ...(t.prompt ? { context: t.prompt } : {}),
      signal: clientGone.signal,
    };

    if (!t.stream) {
      let result: TranscriptionResult;
      try {
        result = await o.backend.transcribe(pcm, call);
      } catch (err) {
        o.metrics.outcomes.inc({ outcome: 'failed' });
        throw err;
      }
      recordOutcome(o.metrics, result);
      if (result.cancelled) {
        if (clientGone.signal.aborted) return reply; // nobody to answer
        throw cancelledByServer();
      }
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
      const result = await o.backend.transcribe(pcm, { ...call, onDelta: (delta) => reply.raw.write(sseEvent(deltaEvent(delta))) });
      recordOutcome(o.metrics, result);
      if (result.cancelled && !clientGone.signal.aborted) {
        reply.raw.write(`event: error\n${sseEvent(cancelledByServer().body())}`);
      } else if (!result.cancelled) {
        reply.raw.write(sseEvent(doneEvent(result)));
        reply.raw.write(SSE_DONE);
      }
    } catch (err) {
      o.metrics.outcomes.inc({ outcome: 'failed' });
      const api = toApiError(err, o.maxUploadBytes);
      req.log.error({ err }, 'streamed transcription failed');
      // Once the event stream has started, an error can only be another event (the SDK raises it as an APIError).
      reply.raw.write(`event: error\n${sseEvent(api.body())}`);
    }
    reply.raw.end();
    return reply;
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
