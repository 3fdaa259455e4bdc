import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Browsers cannot set headers on a WebSocket: OpenAI's clients offer the key as this subprotocol instead. */
export const KEY_SUBPROTOCOL_PREFIX = 'openai-insecure-api-key.';

/** The key a request presents: its bearer token, or on a WebSocket upgrade the key subprotocol. */
function presentedKey(req: FastifyRequest): string | undefined {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
  if (bearer !== undefined || !req.ws) return bearer;
  const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
  return offered.find((p) => p.startsWith(KEY_SUBPROTOCOL_PREFIX))?.slice(KEY_SUBPROTOCOL_PREFIX.length);
}

/**
 * `Authorization: Bearer <key>` (or, on a WebSocket upgrade, the `openai-insecure-api-key.<key>` subprotocol)
 * against the configured keys. Keys are compared as SHA-256 digests with timingSafeEqual, every key every time,
 * so neither a key's length nor its prefix leaks through timing.
 */
export function bearerAuth(keys: readonly string[]): (req: FastifyRequest) => Promise<void> {
  const digests = keys.map(digest);
  return async (req) => {
    if (digests.length === 0) return;
    const presented = presentedKey(req);
    const candidate = digest(presented ?? '');
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, candidate) || ok;
    if (!ok) {
      throw new ApiError(
        401,
        presented !== undefined ? 'Incorrect API key provided.' : "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        'invalid_request_error',
        'invalid_api_key',
        null,
        { 'www-authenticate': 'Bearer' },
      );
    }
  };
}
