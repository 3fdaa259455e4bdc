import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { loadClips } from '../../bench/bench-clips.js';
import { primeService, primingStreams } from '../../bench/bench-level.js';
import { sharedPath } from '../support/shared.js';

const clips = loadClips(sharedPath('fixtures', 'voices-in-the-wild'));

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** A listening server that answers each upload with `answer(n)` (n counts requests from 0) and records the clip names. */
async function listen(answer: (n: number) => { status: number; headers?: Record<string, string> }): Promise<{ url: string; names: string[]; peak: () => number }> {
  const names: string[] = [];
  let n = 0;
  let inFlight = 0;
  let peak = 0;
  server = createServer((req, res) => {
    inFlight += 1;
    peak = Math.max(peak, inFlight);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const { status, headers } = answer(n++);
      if (status === 200) names.push(/filename="([^"]+)\.wav"/.exec(Buffer.concat(chunks).toString('latin1'))![1]!);
      setTimeout(() => {
        inFlight -= 1;
        res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(status === 200 ? '{"text":""}' : `{"error":{"message":"status ${status}"}}`);
      }, 20);
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}`, names, peak: () => peak };
}

describe('priming the service before the first level', () => {
  it('sends every clip once, at most one stream per clip, and retries refusals after Retry-After', async () => {
    expect(primingStreams(clips, 64)).toBe(clips.length);
    expect(primingStreams(clips, 2)).toBe(2);
    // the second and third uploads are refused, as a full queue would
    const s = await listen((n) => (n === 1 || n === 2 ? { status: 429, headers: { 'retry-after': '0.1' } } : { status: 200 }));
    const seconds = await primeService(s.url, clips, 2);
    expect(seconds).toBeGreaterThan(0);
    expect([...s.names].sort()).toEqual(clips.map((c) => c.name).sort());
    expect(s.peak()).toBe(2);
  });

  it('fails naming the clip and the answer on any other status, and the cause when the service cannot be reached', async () => {
    const s = await listen(() => ({ status: 500 }));
    await expect(primeService(s.url, clips.slice(0, 1), 1)).rejects.toThrow(`priming the service: ${clips[0]!.name} was answered 500: {"error":{"message":"status 500"}}`);
    const closed = s.url;
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = undefined;
    await expect(primeService(closed, clips.slice(0, 1), 1)).rejects.toThrow(new RegExp(`^priming the service: ${clips[0]!.name}: .*ECONNREFUSED`));
  });
});
