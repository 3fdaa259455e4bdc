import type { MessagePort } from 'node:worker_threads';
import { InferenceError } from '../asr/errors.js';
import type { DeviceSetting } from '../asr/engine.js';
import type { SharedEmbeddingTable } from '../asr/embeddings.js';
import type { Language } from '../asr/languages.js';
import type { TranscriptionResult } from '../asr/transcribe.js';
import { AudioError, type AudioErrorCode } from '../audio/errors.js';

/** What the pool and its worker threads exchange; everything here survives structured clone. */

export interface AsrWorkerData {
  modelDir: string;
  device: DeviceSetting;
  cudaDeviceId: number;
  intraOpThreads: number;
  /** shared with every worker, never copied */
  embeddings?: SharedEmbeddingTable;
  chunkSeconds: number;
  tokensPerSecond: number;
  tokenBudgetBase: number;
  vad?: { maxSegmentSeconds: number };
  /** Int32 per slot: set by the pool to cancel the task holding that slot */
  cancelFlags: SharedArrayBuffer;
  /** Int32 per slot: set by the worker when the task holding that slot starts running */
  runningFlags: SharedArrayBuffer;
}

export interface AsrTask {
  pcm: Float32Array;
  language?: Language;
  context?: string;
  cancelIndex: number;
  /** receives text deltas; closed by the worker when the task ends */
  port?: MessagePort;
}

/** Posted on the worker's parentPort (the pool's 'message' event). */
export type AsrWorkerMessage =
  | { type: 'asr-worker-ready'; threadId: number }
  | { type: 'asr-worker-failed'; threadId: number; message: string }
  | { type: 'asr-worker-warning'; threadId: number; message: string };

export interface ErrorData {
  name: string;
  message: string;
  code?: string;
}

/** Errors travel as data: structured clone keeps an Error's message but drops its class and custom fields. */
export type AsrOutcome = { ok: true; result: TranscriptionResult; ms: number } | { ok: false; error: ErrorData };

export interface DecodeTask {
  bytes: Uint8Array;
}

export type DecodeFailure = { ok: false; error: ErrorData };

export function errorToData(err: unknown): ErrorData {
  if (err instanceof AudioError) return { name: err.name, message: err.message, code: err.code };
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

/** AudioError comes back as itself; anything else that went wrong in a worker is an InferenceError. */
export function errorFromData(e: ErrorData): AudioError | InferenceError {
  if (e.name === 'AudioError' && e.code) return new AudioError(e.code as AudioErrorCode, e.message);
  return new InferenceError(e.message);
}

export function isAsrWorkerMessage(m: unknown): m is AsrWorkerMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('asr-worker-');
}
