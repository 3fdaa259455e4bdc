import type { AddressInfo } from 'node:net';
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import type { FixtureVariantName } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from './fixture-models.js';

export type TestServer = Awaited<ReturnType<typeof startServer>> & { baseURL: string };

/** The real service (Fastify + piscina workers) on a generated model, listening on a free loopback port. */
export async function startTestServer(env: Record<string, string> = {}, variant: FixtureVariantName = 'default'): Promise<TestServer> {
  const config = loadConfig({
    MODEL_DIR: fixtureModel(variant),
    ASR_DEVICE: 'cpu',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'silent',
    WORKERS: '1',
    DECODE_WORKERS: '1',
    ...env,
  });
  const server = await startServer(config);
  await server.ready;
  const { port } = server.app.server.address() as AddressInfo;
  return { ...server, baseURL: `http://127.0.0.1:${port}` };
}
