import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';

export interface PageRouteOptions {
  /** the folder holding index.html and its assets */
  root: string;
}

/**
 * The page takes nothing from other hosts: its scripts, styles and icon come from here, it talks only to this
 * origin, and it plays back the user's own audio from blob: URLs.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "media-src 'self' blob:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The transcription page at `/` and its files: static, open even when API_KEYS is set (its API calls are not). */
export async function pageRoutes(app: FastifyInstance, o: PageRouteOptions): Promise<void> {
  await app.register(fastifyStatic, {
    root: o.root,
    // One route per file found at start, rather than a catch-all that would take every unknown GET from the 404 handler.
    wildcard: false,
    setHeaders: (reply) => {
      reply.header('content-security-policy', CONTENT_SECURITY_POLICY);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
    },
  });
}
