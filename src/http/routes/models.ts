import type { FastifyInstance } from 'fastify';
import { ApiError } from '../errors.js';
import { checkModel, type ModelIds } from '../transcription-request.js';

export interface ModelRouteOptions {
  models: ModelIds;
  /** unix seconds reported as `created` */
  created: number;
}

/** OpenAI's Model objects: the served id is listed; its aliases resolve too, so SDK look-ups by alias work. */
export async function modelRoutes(app: FastifyInstance, o: ModelRouteOptions): Promise<void> {
  const model = (id: string) => ({ id, object: 'model', created: o.created, owned_by: 'mega-asr-server' });
  app.get('/models', async () => ({ object: 'list', data: [model(o.models.served)] }));
  app.get<{ Params: { id: string } }>('/models/:id', async (req) => {
    if (!req.params.id) throw new ApiError(404, `Invalid URL (GET ${req.url})`, 'invalid_request_error', 'not_found');
    return model(checkModel(req.params.id, o.models));
  });
}
