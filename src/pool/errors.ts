/**
 * The failures the pool reports, each with a domain code its callers map to their own words.
 * Problems with the upload itself are AudioErrors (re-exported, so callers need only the pool).
 */
export { AudioError, type AudioErrorCode } from '../audio/errors.js';

/**
 * `inference_failed`: the engine failed on this request (its worker keeps serving); `worker_lost`: the thread
 * running it died or could not take it; `closed`: the pool has shut down.
 */
export type PoolErrorCode = 'inference_failed' | 'worker_lost' | 'closed';

export class PoolError extends Error {
  override readonly name = 'PoolError';

  constructor(
    readonly code: PoolErrorCode,
    message: string,
  ) {
    super(message);
  }
}
