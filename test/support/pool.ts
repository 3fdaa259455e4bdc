import { AsrPool, type AsrPoolOptions } from '../../src/pool/pool.js';
import type { FixtureVariantName } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from './fixture-models.js';

const quiet = () => {};

/** A warm pool of one ASR worker on a generated model, quiet, with test-sized limits (`o` overrides any). */
export async function startPool(variant: FixtureVariantName, o: Partial<AsrPoolOptions> = {}): Promise<AsrPool> {
  const pool = await AsrPool.start({
    modelDir: fixtureModel(variant),
    device: 'cpu',
    backend: 'host',
    cudaDeviceId: 0,
    intraOpThreads: 1,
    maxBatch: 4,
    leanGraphs: true,
    cpuInt8Matmuls: true,
    cpuFloat32Cache: true,
    workers: 1,
    decodeWorkers: 1,
    maxQueue: 8,
    chunkSeconds: 30,
    tokensPerSecond: 8,
    tokenBudgetBase: 32,
    logger: { info: quiet, warn: quiet, error: quiet },
    ...o,
  });
  await pool.waitUntilReady(60_000);
  return pool;
}
