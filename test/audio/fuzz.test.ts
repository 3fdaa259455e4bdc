import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeUpload, type DecodeLimits } from '../../src/audio/decode.js';
import { AudioError } from '../../src/audio/errors.js';
import { mulberry32 } from '../../tools/random.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { ffmpeg, tempDir, transcode } from '../support/transcode.js';

/**
 * Thousands of mutated real files through the decoding path: every outcome must be finite PCM or an AudioError,
 * within the time limit. WAV mutations stay in-process (cheap); the ffmpeg formats cost two process starts
 * each, so there are fewer of them, two at a time (a 2-core CI machine).
 */

const SEED = 20240601;
const LIMITS: DecodeLimits = { maxSeconds: 600, timeoutMs: 5000 };
/** in-process WAV inputs and ffmpeg inputs per format */
const WAV_INPUTS = 2600;
const FFMPEG_INPUTS_PER_FORMAT = 100;
const HTTP_INPUTS = 200;

const dir = tempDir();
afterAll(() => dir.remove());

const seeds: Record<string, Uint8Array> = {};
beforeAll(() => {
  const short = dir.path('short.wav');
  ffmpeg('-i', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '-t', '1.5', short);
  for (const name of ['wav-pcm16', 'wav-float32', 'flac', 'mp3', 'ogg-opus', 'm4a']) seeds[name] = transcode(short, name, dir).bytes;
  seeds['wav-pcm24-stereo-44k'] = transcode(short, 'wav-pcm24', dir, { rate: 44100, channels: 2 }).bytes;
});

type Rand = () => number;
const int = (rand: Rand, n: number) => Math.floor(rand() * n);
const junk = (rand: Rand, n: number) => Uint8Array.from({ length: n }, () => int(rand, 256));
const EXTREMES = [0, 1, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 44100, 64, 3];

/** One random mutation: byte flips (often in the header), truncation, inserted junk, a deleted or repeated range, a header field set to an extreme value. */
function mutate(seed: Uint8Array, rand: Rand): Uint8Array {
  const b = seed.slice();
  const at = (headerBias: boolean) => (headerBias && rand() < 0.6 ? int(rand, Math.min(128, b.length)) : int(rand, b.length));
  switch (int(rand, 6)) {
    case 0: {
      for (let k = 1 + int(rand, 8); k > 0; k--) b[at(true)] = int(rand, 256);
      return b;
    }
    case 1:
      return b.subarray(0, int(rand, b.length));
    case 2: {
      const p = at(true);
      const out = new Uint8Array(b.length + 1 + int(rand, 512));
      out.set(b.subarray(0, p));
      out.set(junk(rand, out.length - b.length), p);
      out.set(b.subarray(p), p + out.length - b.length);
      return out;
    }
    case 3: {
      const p = at(true);
      const q = Math.min(b.length, p + 1 + int(rand, 4096));
      return new Uint8Array([...b.subarray(0, p), ...b.subarray(q)]);
    }
    case 4: {
      const p = at(false);
      const q = Math.min(b.length, p + 1 + int(rand, 4096));
      const r = at(false);
      return new Uint8Array([...b.subarray(0, r), ...b.subarray(p, q), ...b.subarray(r)]);
    }
    default: {
      const p = int(rand, Math.max(1, Math.min(64, b.length - 4)));
      const view = new DataView(b.buffer);
      const value = EXTREMES[int(rand, EXTREMES.length)]!;
      if (rand() < 0.5) view.setUint32(p, value >>> 0, rand() < 0.7);
      else view.setUint16(p, value & 0xffff, rand() < 0.7);
      return b;
    }
  }
}

interface Tally {
  tried: number;
  outcomes: Record<string, number>;
  failures: string[];
  slowestMs: number;
}

async function tryOne(bytes: Uint8Array, format: string, tally: Tally): Promise<void> {
  const started = performance.now();
  let outcome: string;
  try {
    const pcm = await decodeUpload(bytes, LIMITS);
    const finite = pcm.every((x) => Number.isFinite(x) && Math.abs(x) <= 1);
    outcome = finite && pcm.length >= 1600 && pcm.length <= LIMITS.maxSeconds * 16000 ? 'decoded' : 'BAD PCM';
  } catch (err) {
    outcome = err instanceof AudioError ? err.code : `THREW ${(err as Error).name}: ${(err as Error).message}`;
  }
  tally.slowestMs = Math.max(tally.slowestMs, performance.now() - started);
  tally.tried++;
  tally.outcomes[outcome] = (tally.outcomes[outcome] ?? 0) + 1;
  if (outcome === 'BAD PCM' || outcome.startsWith('THREW')) tally.failures.push(`${format}: ${outcome}`);
}

async function inParallel<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function report(title: string, tallies: Record<string, Tally>, ms: number): string {
  const codes = [...new Set(Object.values(tallies).flatMap((t) => Object.keys(t.outcomes)))].sort();
  const lines = [`${title}: ${Object.values(tallies).reduce((n, t) => n + t.tried, 0)} inputs in ${(ms / 1000).toFixed(1)} s`];
  lines.push(['format'.padEnd(22), 'tried'.padStart(6), ...codes.map((c) => c.padStart(26)), 'slowest ms'.padStart(11)].join(''));
  for (const [format, t] of Object.entries(tallies)) {
    lines.push([format.padEnd(22), String(t.tried).padStart(6), ...codes.map((c) => String(t.outcomes[c] ?? 0).padStart(26)), t.slowestMs.toFixed(0).padStart(11)].join(''));
  }
  return lines.join('\n');
}

const newTally = (): Tally => ({ tried: 0, outcomes: {}, failures: [], slowestMs: 0 });

describe('fuzzing decodeUpload with mutated real files', () => {
  it(`${WAV_INPUTS} WAV and ${FFMPEG_INPUTS_PER_FORMAT} each of FLAC, MP3, Ogg Opus and M4A: PCM or AudioError, never a crash or a hang`, { timeout: 240_000 }, async () => {
    const rand = mulberry32(SEED);
    const started = performance.now();
    const tallies: Record<string, Tally> = {};
    const wavSeeds = ['wav-pcm16', 'wav-float32', 'wav-pcm24-stereo-44k'];
    for (let i = 0; i < WAV_INPUTS; i++) {
      const format = wavSeeds[i % wavSeeds.length]!;
      await tryOne(mutate(seeds[format]!, rand), format, (tallies[format] ??= newTally()));
    }
    const jobs: [string, Uint8Array][] = [];
    for (const format of ['flac', 'mp3', 'ogg-opus', 'm4a']) {
      for (let i = 0; i < FFMPEG_INPUTS_PER_FORMAT; i++) jobs.push([format, mutate(seeds[format]!, rand)]);
    }
    await inParallel(jobs, 2, ([format, bytes]) => tryOne(bytes, format, (tallies[format] ??= newTally())));
    const ms = performance.now() - started;
    console.log(report(`decodeUpload fuzz (seed ${SEED})`, tallies, ms));

    const all = Object.values(tallies);
    expect(all.flatMap((t) => t.failures)).toEqual([]);
    expect(all.reduce((n, t) => n + t.tried, 0)).toBe(WAV_INPUTS + 4 * FFMPEG_INPUTS_PER_FORMAT);
    // Nothing hangs: the slowest input stays within the decode time limit (plus the probe's start).
    expect(Math.max(...all.map((t) => t.slowestMs))).toBeLessThan(LIMITS.timeoutMs + 2000);
    // The mutations exercise both outcomes for every format.
    for (const t of all) {
      expect(t.outcomes.decoded).toBeGreaterThan(0);
      expect(t.tried - (t.outcomes.decoded ?? 0)).toBeGreaterThan(0);
    }
  });
});

describe('fuzzing the HTTP endpoint', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server.stop('test done'));

  it(`${HTTP_INPUTS} mutated uploads: 200 or a 4xx OpenAI error, never a 5xx; the server stays ready`, { timeout: 240_000 }, async () => {
    const rand = mulberry32(SEED + 1);
    const formats = ['wav-pcm16', 'wav-pcm16', 'wav-float32', 'flac', 'mp3', 'ogg-opus', 'm4a'];
    const inputs = Array.from({ length: HTTP_INPUTS }, (_, i) => mutate(seeds[formats[i % formats.length]!]!, rand));
    const statuses: Record<string, number> = {};
    const bad: string[] = [];
    const started = performance.now();
    await inParallel(inputs, 2, async (bytes) => {
      const form = new FormData();
      form.append('model', 'whisper-1');
      form.append('file', new Blob([bytes]), 'fuzz.bin');
      const res = await fetch(`${server.baseURL}/v1/audio/transcriptions`, { method: 'POST', body: form });
      const body = (await res.json()) as { text?: string; error?: { code: string | null; message: string } };
      const key = res.status === 200 ? '200' : `${res.status} ${body.error?.code}`;
      statuses[key] = (statuses[key] ?? 0) + 1;
      if (res.status >= 500 || (res.status !== 200 && !body.error?.message)) bad.push(`${res.status} ${JSON.stringify(body)}`);
    });
    console.log(`HTTP fuzz (seed ${SEED + 1}): ${HTTP_INPUTS} uploads in ${((performance.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(statuses)}`);
    expect(bad).toEqual([]);
    expect((await fetch(`${server.baseURL}/ready`)).status).toBe(200);
    const form = new FormData();
    form.append('model', 'whisper-1');
    form.append('file', new Blob([seeds['mp3']!]), 'clip.mp3');
    expect((await fetch(`${server.baseURL}/v1/audio/transcriptions`, { method: 'POST', body: form })).status).toBe(200);
  });
});
