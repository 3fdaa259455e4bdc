import { readFile } from 'node:fs/promises';
import { describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { fixtureModel } from '../support/fixture-models.js';
import { osThreadCount } from '../support/os-threads.js';

describe('stopping the service while it starts', () => {
  it('closes the VAD thread when it comes up after stop(): no thread outlives the stop', async () => {
    const config = loadConfig({ MODEL_DIR: fixtureModel('default'), ASR_DEVICE: 'cpu', HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'silent', WORKERS: '1', DECODE_WORKERS: '1' });
    await readFile(new URL(import.meta.url)); // libuv's thread pool starts on first use and stays: start it before counting
    const before = osThreadCount();
    const server = await startServer(config);
    // The VAD thread is still loading Silero here (a worker start and a model load; the stop below takes ms).
    void server.ready.catch(() => {}); // a drain that began while loading: the service never becomes ready
    await server.stop('test');
    await vi.waitFor(() => expect(osThreadCount()).toBe(before), { timeout: 30_000, interval: 100 });
  });
});
