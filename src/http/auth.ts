import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * `Authorization: Bearer <key>` against the configured keys. Keys are compared as SHA-256 digests with
 * timingSafeEqual, every key every time, so neither a key's length nor its prefix leaks through timing.
 */
export function bearerAuth(keys: readonly string[]): (req: FastifyRequest) => Promise<void> {
  const digests = keys.map(digest);
  return async (req) => {
    if (digests.length === 0) return;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    const candidate = digest(match?.[1] ?? '');
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, candidate) || ok;
    if (!ok) {
      throw new ApiError(
        401,
        match ? 'Incorrect API key provided.' : "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        'invalid_request_error',
        'invalid_api_key',
        null,
        { 'www-authenticate': 'Bearer' },
      );
    }
  };
}
