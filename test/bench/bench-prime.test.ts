import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { loadClips } from '../../bench/bench-clips.js';
import { primeService } from '../../bench/bench-level.js';
import { sharedPath } from '../support/shared.js';

const clips = loadClips(sharedPath('fixtures', 'voices-in-the-wild'));

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** A listening server that answers each upload with `answer(n)` (n counts requests from 0), recording the clips it transcribed. */
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
  it('sends every clip once, at most one stream per clip, and waits out the Retry-After of a 429', async () => {
    const s = await listen((n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }));
    const primed = await primeService(s.url, clips, 64);
    expect(primed.streams).toBe(clips.length);
    expect(s.peak()).toBeLessThanOrEqual(clips.length);
    expect([...s.names].sort()).toEqual(clips.map((c) => c.name).sort());
    // the refused clip waited its second before it was sent again
    expect(primed.seconds).toBeGreaterThanOrEqual(1);
  });

  it('keeps to the streams asked for', async () => {
    const s = await listen(() => ({ status: 200 }));
    expect((await primeService(s.url, clips, 2)).streams).toBe(2);
    expect(s.peak()).toBe(2);
    expect(s.names).toHaveLength(clips.length);
  });

  it('gives up after 20 refusals of one clip, and fails at once on a 503 or any other status, naming the clip and the answer', async () => {
    let tries = 0;
    const refusing = await listen(() => (tries++, { status: 429, headers: { 'retry-after': '0' } }));
    await expect(primeService(refusing.url, clips.slice(0, 1), 1)).rejects.toThrow(`priming the service: ${clips[0]!.name} was answered 429`);
    expect(tries).toBe(21);
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    let asked = 0;
    const draining = await listen(() => (asked++, { status: 503 }));
    await expect(primeService(draining.url, clips.slice(0, 1), 1)).rejects.toThrow(`priming the service: ${clips[0]!.name} was answered 503: {"error":{"message":"status 503"}}`);
    expect(asked).toBe(1);
  });

  it('names the cause when the service cannot be reached', async () => {
    const s = await listen(() => ({ status: 200 }));
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = undefined;
    await expect(primeService(s.url, clips.slice(0, 1), 1)).rejects.toThrow(new RegExp(`^priming the service: ${clips[0]!.name}: .*ECONNREFUSED`));
  });
});
