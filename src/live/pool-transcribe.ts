import type { AsrPool } from '../pool/pool.js';
import { TranscribeRefused, type TurnTranscribe } from './types.js';

/**
 * Live transcriptions through the pool's admission, like any file request: each call takes its own place in
 * the shared scheduler and batches, and is refused (TranscribeRefused) when the pool has no room.
 */
export function poolTranscribe(pool: AsrPool): TurnTranscribe {
  return async (pcm, call) => {
    const admission = pool.admit();
    if ('refused' in admission) throw new TranscribeRefused(admission.refused, admission.retryAfterSeconds);
    try {
      return await pool.transcribe(admission, pcm, call);
    } finally {
      admission.release();
    }
  };
}
