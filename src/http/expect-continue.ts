import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the route sends `100 Continue` itself (sendContinue) once it has admitted the request */
    continueAfterAdmission?: boolean;
  }
}

/** Requests whose client waits for `100 Continue` before it sends the body, and has not had it yet. */
const awaitingContinue = new WeakSet<IncomingMessage>();

/**
 * `Expect: 100-continue`: Node answers 100 at once unless the server listens for 'checkContinue'. Here it is
 * answered once routing and the onRequest hooks (authentication) have passed, just before the body is parsed; a
 * route marked `continueAfterAdmission` answers it after its own checks, so a refusal (401, 429, 503...) is sent
 * before the client has sent a byte of the body. A final answer without 100 makes Node close the connection.
 */
export function answerExpectContinue(app: FastifyInstance): void {
  app.server.on('checkContinue', (req: IncomingMessage, res) => {
    awaitingContinue.add(req);
    app.server.emit('request', req, res);
  });
  app.addHook('preParsing', async (req, reply, payload) => {
    if (!req.routeOptions.config.continueAfterAdmission) sendContinue(req, reply);
    return payload;
  });
}

/** Lets a waiting client send its body (nothing when it did not ask, or already has its answer). */
export function sendContinue(req: FastifyRequest, reply: FastifyReply): void {
  if (awaitingContinue.delete(req.raw) && !reply.raw.headersSent) reply.raw.writeContinue();
}
