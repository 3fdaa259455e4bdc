import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../../metrics.js';
import type { TranscriptionBackend } from '../backend.js';

export interface OperationsRouteOptions {
  backend: TranscriptionBackend;
  metrics: Metrics;
  openapiPath: string;
}

/** Liveness, readiness, Prometheus metrics and the API description: open even when API_KEYS is set. */
export async function operationsRoutes(app: FastifyInstance, o: OperationsRouteOptions): Promise<void> {
  const openapi = readFileSync(o.openapiPath, 'utf8');

  // Probes and scrapes arrive every few seconds: only their problems are worth a log line.
  const quiet = { logLevel: 'warn' } as const;

  app.get('/health', quiet, async () => ({ status: 'ok' }));

  app.get('/ready', quiet, async (_req, reply) => {
    const { workers, readyWorkers, busyWorkers, admitted, queued, draining } = o.backend.stats;
    const status = o.backend.ready ? 'ready' : draining ? 'draining' : o.backend.downloading ? 'downloading' : 'not_ready';
    // The fields openapi.yaml's Readiness lists; sequences and capacity are on /metrics.
    return reply.status(status === 'ready' ? 200 : 503).send({ status, workers, readyWorkers, busyWorkers, admitted, queued, draining });
  });

  app.get('/metrics', quiet, async (_req, reply) => reply.type(o.metrics.registry.contentType).send(await o.metrics.registry.metrics()));

  app.get('/openapi.yaml', async (_req, reply) => reply.type('application/yaml; charset=utf-8').send(openapi));
}
