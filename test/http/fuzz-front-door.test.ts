import { Agent } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send, sendHostile, Tally } from '../../bench/soak-client.js';
import { mulberry32 } from '../../tools/random.js';
import { fuzzSeeds, hostileRequest, multipart } from '../support/mutate.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { tempDir } from '../support/transcode.js';

/**
 * The front door under hostile clients: mutated real files and broken multipart forms through the real server,
 * on keep-alive connections (as SDKs send). Every answer is a 200 or an OpenAI-style 4xx, none is a 5xx, none
 * takes past the deadline, and the server still serves. The nightly-sized run (5,000 and more) is
 * `npm run soak -- --fuzz 5000`, with the same inputs.
 */

const SEED = 20240602;
const INPUTS = 200;
const DEADLINE_MS = 30_000;

const dir = tempDir();
let seeds: Record<string, Uint8Array>;
let server: TestServer;
let url: string;
beforeAll(async () => {
  seeds = fuzzSeeds(dir);
  server = await startTestServer();
  url = `${server.baseURL}/v1/audio/transcriptions`;
});
afterAll(async () => {
  await server.stop('test done');
  dir.remove();
});

const BOUNDARY = 'frontdoor';
const HEADERS = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` };
const wellFormed = (file: Uint8Array) => multipart(BOUNDARY, [{ name: 'model', value: 'whisper-1' }, { name: 'file', value: file, filename: 'clip.mp3' }]);

describe('fuzzing the front door', () => {
  it(`${INPUTS} hostile requests (mutated files, broken forms) on keep-alive connections: 200 or an OpenAI 4xx, never a 5xx or a hang`, { timeout: 240_000 }, async () => {
    const rand = mulberry32(SEED);
    const inputs = Array.from({ length: INPUTS }, (_, i) => hostileRequest(rand, seeds, i));
    const tally = new Tally();
    const agent = new Agent({ keepAlive: true, maxSockets: 2 });
    const started = performance.now();
    let next = 0;
    await Promise.all(
      [0, 1].map(async () => {
        while (next < inputs.length) {
          const input = inputs[next++]!;
          tally.add(input.kind, await sendHostile(url, input, { deadlineMs: DEADLINE_MS, agent }), true);
        }
      }),
    );
    agent.destroy();
    console.log(`front-door fuzz (seed ${SEED}): ${INPUTS} requests in ${((performance.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(tally.byStatus())}`);

    expect(tally.failures).toEqual([]);
    expect(tally.total()).toBe(INPUTS);
    // both outcomes are exercised: some mutations still decode, most forms are refused
    const byStatus = tally.byStatus();
    expect(byStatus['200']).toBeGreaterThan(0);
    expect(byStatus['400']).toBeGreaterThan(0);
    expect(tally.slowestMs).toBeLessThan(DEADLINE_MS);
    expect((await fetch(`${server.baseURL}/ready`)).status).toBe(200);
    expect((await send(url, { headers: HEADERS, body: wellFormed(seeds['mp3']!), deadlineMs: DEADLINE_MS })).status).toBe(200);
  });

  it('a form refused before its end (a field too long, a second file) leaves its keep-alive connection usable', { timeout: 60_000 }, async () => {
    const file = { name: 'file', value: seeds['wav-pcm16']!, filename: 'a.wav' };
    const refused = [
      multipart(BOUNDARY, [{ name: 'stream', value: 'a'.repeat(300_000) }, { name: 'model', value: 'whisper-1' }, file]),
      multipart(BOUNDARY, [{ name: 'model', value: 'whisper-1' }, file, file]),
    ];
    for (const body of refused) {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      expect((await send(url, { headers: HEADERS, body, deadlineMs: DEADLINE_MS, agent })).status).toBe(400);
      // the same socket: before the fix this request waited for ever behind the unread rest of the refused body
      const after = await send(url, { headers: HEADERS, body: wellFormed(seeds['mp3']!), deadlineMs: 10_000, agent });
      agent.destroy();
      expect(after.status).toBe(200);
    }
  });
});
