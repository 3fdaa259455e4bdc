import { workerData } from 'node:worker_threads';
import { move } from 'piscina';
import { DEFAULT_DECODE_LIMITS, decodeUpload, type DecodeLimits } from '../audio/decode.js';
import { decoderCapabilities } from '../audio/ffmpeg.js';
import { errorToData, type DecodeFailure, type DecodeTask } from './protocol.js';

export interface DecodeWorkerData {
  decodeLimits: DecodeLimits;
}

const limits = (workerData as Partial<DecodeWorkerData> | null)?.decodeLimits ?? DEFAULT_DECODE_LIMITS;
// Ask ffmpeg what it can do while idle, not on the first upload.
void decoderCapabilities();

/**
 * Piscina worker: upload bytes (any supported format) -> 16 kHz mono PCM, off the HTTP event loop and the
 * ASR threads. An ffmpeg decode runs as a child process that this thread waits for.
 */
export default async function decode(task: DecodeTask): Promise<ReturnType<typeof move> | DecodeFailure> {
  try {
    // move(): the samples are transferred back, not cloned; the pool receives the Float32Array itself.
    return move(await decodeUpload(task.bytes, limits));
  } catch (err) {
    return { ok: false, error: errorToData(err) };
  }
}
