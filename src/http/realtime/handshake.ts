/** The subprotocol OpenAI's browser clients offer alongside their key (`openai-insecure-api-key.<key>`). */
const REALTIME_SUBPROTOCOL = 'realtime';

/**
 * The subprotocol the server answers with: `realtime` when offered, as OpenAI does; otherwise none. Never the
 * key subprotocol (ws's default picks the first offered, which would echo the key back). A browser offering
 * subprotocols needs one of them answered, so browsers offer `realtime` with the key, as OpenAI's do.
 */
export function realtimeSubprotocol(offered: Set<string>): string | false {
  return offered.has(REALTIME_SUBPROTOCOL) ? REALTIME_SUBPROTOCOL : false;
}

/**
 * Largest frame ws accepts: twice the base64 of the append limit, so an append somewhat over the limit is answered
 * with an `error` event (audio_too_large); a frame beyond this is refused by ws with close code 1009.
 */
export function wsMaxPayload(maxAppendBytes: number): number {
  return 2 * Math.ceil(maxAppendBytes / 3) * 4 + 64 * 1024;
}
