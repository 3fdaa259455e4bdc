import { move } from 'piscina';
import { decodeWavToPcm } from '../audio/pcm.js';
import { errorToData, type DecodeFailure, type DecodeTask } from './protocol.js';

/** Piscina worker: upload bytes -> 16 kHz mono PCM, off the HTTP event loop and the ASR threads. */
export default function decode(task: DecodeTask): ReturnType<typeof move> | DecodeFailure {
  try {
    // move(): the samples are transferred back, not cloned; the pool receives the Float32Array itself.
    return move(decodeWavToPcm(task.bytes));
  } catch (err) {
    return { ok: false, error: errorToData(err) };
  }
}
