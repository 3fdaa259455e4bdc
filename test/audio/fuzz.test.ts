import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeUpload, type DecodeLimits } from '../../src/audio/decode.js';
import { AudioError } from '../../src/audio/errors.js';
import { mulberry32 } from '../../tools/random.js';
import { fuzzSeeds, mutate } from '../support/mutate.js';
import { tempDir } from '../support/transcode.js';

/**
 * Thousands of mutated real files through the decoding path: every outcome must be finite PCM or an AudioError,
 * within the time limit. WAV mutations stay in-process (cheap); the ffmpeg formats cost two process starts
 * each, so there are fewer of them, two at a time (a 2-core CI machine). The same mutations reach the real
 * server in test/http/fuzz-front-door.test.ts.
 */

const SEED = 20240601;
const LIMITS: DecodeLimits = { maxSeconds: 600, timeoutMs: 5000 };
/** in-process WAV inputs and ffmpeg inputs per format */
const WAV_INPUTS = 2600;
const FFMPEG_INPUTS_PER_FORMAT = 100;

const dir = tempDir();
afterAll(() => dir.remove());

let seeds: Record<string, Uint8Array> = {};
beforeAll(() => {
  seeds = fuzzSeeds(dir);
});

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
