import type { MessagePort } from 'node:worker_threads';
import type { BackendSetting, DeviceSetting } from '../asr/engine.js';
import type { SharedEmbeddingTable } from '../asr/embeddings.js';
import type { Language } from '../asr/languages.js';
import type { TranscriptPrefix } from '../asr/prompt.js';
import type { TranscriptionResult } from '../asr/transcribe.js';
import { AudioError, type AudioErrorCode } from '../audio/errors.js';
import type { CancelCells } from './cancel-slots.js';
import { PoolError } from './errors.js';

/** What the pool and its worker threads exchange; everything here survives structured clone. */

export interface AsrWorkerData {
  modelDir: string;
  device: DeviceSetting;
  backend: BackendSetting;
  cudaDeviceId: number;
  intraOpThreads: number;
  /** sequences one engine may decode together (the engine may allow fewer: it reports how many when ready) */
  maxBatch: number;
  leanGraphs: boolean;
  cpuInt8Matmuls: boolean;
  cpuFloat32Cache: boolean;
  /** shared with every worker, never copied */
  embeddings?: SharedEmbeddingTable;
  chunkSeconds: number;
  tokensPerSecond: number;
  tokenBudgetBase: number;
  vad?: { maxSegmentSeconds: number };
  cells: CancelCells;
}

export interface AsrTask {
  pcm: Float32Array;
  language?: Language;
  context?: string;
  /** forced start of the answer (TranscribeCall's) */
  prefix?: TranscriptPrefix;
  /** one sequence, no VAD, no chunking */
  whole?: boolean;
  /** the admission's cell in `cells` */
  slot: number;
  /** receives text deltas; closed by the worker when the task ends */
  port?: MessagePort;
}

/** Posted on the worker's parentPort (the pool's 'message' event). */
export type AsrWorkerMessage =
  /** `maxBatch`: the sequences this worker's engine decodes at once */
  | { type: 'asr-worker-ready'; threadId: number; maxBatch: number }
  | { type: 'asr-worker-failed'; threadId: number; message: string }
  /** the engine's own log lines (a device fallback, a batch fixed at 1) */
  | { type: 'asr-worker-log'; threadId: number; level: 'info' | 'warn'; message: string };

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

/** AudioError comes back as itself; anything else that went wrong in a worker is the engine failing on this input. */
export function errorFromData(e: ErrorData): AudioError | PoolError {
  if (e.name === 'AudioError' && e.code) return new AudioError(e.code as AudioErrorCode, e.message);
  return new PoolError('inference_failed', e.message);
}

export function isAsrWorkerMessage(m: unknown): m is AsrWorkerMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('asr-worker-');
}
