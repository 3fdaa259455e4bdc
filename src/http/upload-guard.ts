import type { IncomingMessage } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { uploadTimedOut, type UploadCut } from './errors.js';

export interface UploadGuardLimits {
  /** no byte for this long: cut */
  idleSeconds: number;
  /** fewer bytes than this many per second past the grace: cut (0: no rate check) */
  minBytesPerSecond: number;
  graceSeconds: number;
}

/** A body is coming: a length above 0, or chunked framing. */
const hasBody = (raw: IncomingMessage) => Number(raw.headers['content-length'] ?? 0) > 0 || raw.headers['transfer-encoding'] !== undefined;

/**
 * Watches a request's body from its headers until its last byte, whoever reads it (a route, or Node discarding the
 * rest after an early answer): a body that stalls or crawls is cut. Progress is the socket's byte count, sampled
 * by a timer, so the stream's readers are left alone. The rule is mod_reqtimeout's: by `grace + n / minRate`
 * seconds at least n bytes must have arrived.
 * When no answer has started, the client gets 408 and the connection closes (the rest is not read); otherwise
 * the connection is closed. Either way the route's read fails and its upload slot is given back.
 */
export function guardUpload(req: FastifyRequest, reply: FastifyReply, limits: UploadGuardLimits, onCut: (reason: UploadCut) => void): void {
  const raw = req.raw;
  if (!hasBody(raw) || raw.complete) return;
  const socket = raw.socket;
  const started = Date.now();
  const firstByte = socket.bytesRead;
  let lastBytes = firstByte;
  let lastProgress = started;
  const idleMs = limits.idleSeconds * 1000;

  const check = () => {
    const now = Date.now();
    const bytes = socket.bytesRead;
    if (bytes !== lastBytes) {
      lastBytes = bytes;
      lastProgress = now;
    }
    const required = limits.minBytesPerSecond * ((now - started) / 1000 - limits.graceSeconds);
    const reason: UploadCut | undefined =
      now - lastProgress >= idleMs ? 'idle' : limits.minBytesPerSecond > 0 && bytes - firstByte < required ? 'slow' : undefined;
    if (reason) cut(reason);
  };
  const timer = setInterval(check, Math.min(1000, idleMs / 4));
  timer.unref();
  const stop = () => clearInterval(timer);
  raw.once('end', stop);
  raw.once('close', stop);

  const cut = (reason: UploadCut) => {
    stop();
    onCut(reason);
    const res = reply.raw;
    // Destroying the request (and with it the socket) fails its reader: once the answer has finished, Node no
    // longer tells the request that its socket closed.
    if (res.headersSent || !socket.writable) {
      raw.destroy();
      return;
    }
    // Written here, not through Fastify: the route is still awaiting the body, and fails once it is destroyed.
    reply.hijack();
    const body = JSON.stringify(uploadTimedOut(reason).body());
    res.writeHead(408, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-request-id': String(req.id),
      connection: 'close',
    });
    res.end(body, () => raw.destroy());
  };
}
