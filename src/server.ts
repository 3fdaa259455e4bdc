#!/usr/bin/env node
// onnxruntime (in the worker threads, which inherit this environment) must never phone home.
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { findModelFiles } from './asr/model-dir.js';
import { reportDecoderCapabilities } from './audio/decode.js';
import { engineSettings, loadConfig, transcriptionSettings, type Config } from './config.js';
import { buildApp } from './http/app.js';
import { RealtimeSessions } from './http/realtime/sessions.js';
import { poolTranscribe } from './live/pool-transcribe.js';
import { DEFAULT_MAX_TURN_SECONDS, LiveSession } from './live/session.js';
import { Metrics } from './metrics.js';
import { ensureModel } from './hub/ensure-model.js';
import { logProgress } from './hub/progress.js';
import { PendingBackend } from './pool/pending-backend.js';
import { AsrPool } from './pool/pool.js';
import { VadThread } from './pool/vad-thread.js';

/**
 * The service: a piscina pool of warm ASR workers behind Fastify. It listens at once (so /health answers while
 * the model downloads and loads), fetches the model into the Hugging Face cache when MODEL_DIR is unset, and
 * reports /ready when every worker has loaded and warmed up its sessions.
 */
export async function startServer(config: Config = loadConfig()) {
  const logger = pino({ level: config.LOG_LEVEL });
  // a missing local model fails here, in one line, before anything listens or any thread starts
  if (config.MODEL_DIR) findModelFiles(config.MODEL_DIR);
  await reportDecoderCapabilities(logger); // one line: what this ffmpeg decodes, or which formats it cannot take
  const backend = new PendingBackend(config.WORKERS);
  const metrics = new Metrics(() => backend.stats);
  const realtime = new RealtimeSessions({
    maxSessions: config.MAX_REALTIME_SESSIONS,
    limits: {
      idleSeconds: config.REALTIME_IDLE_SECONDS,
      maxAppendBytes: config.REALTIME_MAX_APPEND_BYTES,
      maxEventsPerSecond: config.REALTIME_MAX_EVENTS_PER_SECOND,
    },
    models: { served: config.SERVED_MODEL_ID, aliases: config.MODEL_ALIASES },
    metrics,
  });
  const app = await buildApp({ config, backend, metrics, logger, realtime });
  await app.listen({ host: config.HOST, port: config.PORT });
  /** the VAD thread, started or starting: stop() closes it once it is up */
  let vadStart: Promise<VadThread> | undefined;
  /** its start's failure, said once when it happened */
  let vadFailure: Error | undefined;

  const download = new AbortController();
  let stopping: Promise<void> | undefined;
  const ready = (async () => {
    let modelDir = config.MODEL_DIR;
    if (!modelDir) {
      const onDownloading = () => void (backend.downloading = true);
      try {
        modelDir = await ensureModel(config, { logger, progress: logProgress(logger), signal: download.signal, onDownloading });
      } finally {
        backend.downloading = false;
      }
    }
    // Live turns are detected on a thread of their own (a model run per 32 ms per session would hold up this
    // one), one VAD stream per session. It starts with the pool and runs before the pool is attached, so /ready
    // never says yes while live sessions are still refused.
    vadStart = VadThread.start(logger);
    // Said at once: the pool's workers may take a while to load before the failure below ends the start.
    vadStart.catch((err: Error) => {
      vadFailure = err;
      logger.fatal({ error: err.message }, 'the voice activity thread (Silero VAD, for live turn detection) could not start: the service will not become ready');
    });
    const pool = await AsrPool.start({
      modelDir,
      ...engineSettings(config),
      ...transcriptionSettings(config),
      workers: config.WORKERS,
      decodeWorkers: config.DECODE_WORKERS,
      maxQueue: config.MAX_QUEUE,
      maxAudioSeconds: config.MAX_AUDIO_SECONDS,
      decodeTimeoutSeconds: config.DECODE_TIMEOUT_SECONDS,
      stages: metrics,
      logger,
    });
    let vadThread: VadThread;
    try {
      vadThread = await vadStart;
    } catch (err) {
      await pool.drain(0);
      throw err;
    }
    backend.attach(pool);
    await pool.waitUntilReady();
    const transcribe = poolTranscribe(pool);
    // A turn is transcribed whole, which the workers refuse past ASR_CHUNK_SECONDS: it is committed before that.
    const maxTurnSeconds = Math.min(DEFAULT_MAX_TURN_SECONDS, config.ASR_CHUNK_SECONDS);
    realtime.attach(
      (live, listener) =>
        new LiveSession(
          { transcribe, vadStream: () => vadThread.stream(), partialSeconds: config.REALTIME_PARTIAL_SECONDS, maxTurnSeconds, config: live },
          listener,
        ),
    );
    // a drain that began while the workers loaded refuses work: the service never becomes ready
    if (!stopping) logger.info({ workers: config.WORKERS, sequences: pool.stats.capacity, modelDir }, 'workers loaded and warm: ready');
  })().catch((err: Error) => {
    if (!download.signal.aborted && err !== vadFailure) logger.fatal({ error: err.message }, 'the model could not be loaded');
    throw err;
  });

  /**
   * Stop taking work (new transcriptions get 503, /ready says draining, still answering probes), let in-flight
   * work finish within the grace period (then it is cancelled between decode steps), then close the listener.
   */
  const stop = (reason: string) =>
    (stopping ??= (async () => {
      logger.info({ reason, graceSeconds: config.SHUTDOWN_GRACE_SECONDS }, 'draining');
      download.abort();
      // Realtime sessions finish their committed turns within the grace, then close with 1001.
      await Promise.all([realtime.drain(config.SHUTDOWN_GRACE_SECONDS * 1000), backend.drain(config.SHUTDOWN_GRACE_SECONDS * 1000)]);
      // A keep-alive connection would hold close() open for keepAliveTimeout (72 s): close idle ones as they
      // appear, and after the last answers have been written, cut whatever is left (e.g. a stalled upload).
      const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
      const cut = setTimeout(() => app.server.closeAllConnections(), 500);
      await app.close().finally(() => {
        clearInterval(sweep);
        clearTimeout(cut);
      });
      // still starting: closed once it is up (never while it loads the model), so no thread outlives the stop
      await vadStart?.then((t) => t.close(), () => {});
      logger.info('stopped');
    })());

  return {
    app,
    /** the worker pool; exists once the model is on disk (always after `ready`) */
    get pool(): AsrPool {
      if (!backend.current) throw new Error('the worker pool has not started yet');
      return backend.current;
    },
    ready,
    stop,
    /** the realtime sessions (GET /v1/realtime) */
    realtime,
    address: app.server.address(),
  };
}

const entry = process.argv[1];
const isMain = entry !== undefined && import.meta.url === pathToFileURL(realpathSync(entry)).href;
if (isMain) {
  try {
    const server = await startServer();
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        server.stop(signal).then(
          () => process.exit(0),
          () => process.exit(1),
        );
      });
    }
    await server.ready.catch(() => server.stop('model load failed').finally(() => process.exit(1)));
  } catch (err) {
    console.error(`mega-asr-server: ${(err as Error).message}`);
    process.exit(1);
  }
}
