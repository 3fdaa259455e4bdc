import { describe, expect, it } from 'vitest';
import { splitAudioIntoChunks } from '../../src/audio/chunking.js';

const SR = 16000;
/** Loud noise with near-silent dips at the given sample positions. */
function noiseWithDips(seconds: number, dips: number[], dipLength = 4000): Float32Array {
  let seed = 1;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from({ length: Math.round(seconds * SR) }, () => 0.5 * rand());
  for (const d of dips) for (let i = d - dipLength / 2; i < d + dipLength / 2; i++) x[i] = 0.001 * rand();
  return x;
}

describe('splitAudioIntoChunks (qwen-asr algorithm)', () => {
  it('keeps audio up to the limit whole', () => {
    const x = new Float32Array(30 * SR);
    const chunks = splitAudioIntoChunks(x, 30);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]).toMatchObject({ start: 0, end: 30 });
    expect(chunks[0]!.pcm.length).toBe(x.length);
    expect(chunks[0]!.pcm.buffer).toBe(x.buffer); // a view, not a copy
  });

  it('cuts at the quietest point within +-5 s of each limit', () => {
    // Dips at 27 s and 58 s; limit 30 s: cuts land inside each dip, not on the 30 s grid.
    const x = noiseWithDips(80, [27 * SR, 58 * SR]);
    x[27 * SR + 123] = 0; // the exact quietest sample of the first dip
    const chunks = splitAudioIntoChunks(x, 30);
    expect(chunks).toHaveLength(3);
    expect(chunks[0]!.end * SR).toBe(27 * SR + 123);
    expect(Math.abs(chunks[1]!.end - 58)).toBeLessThan(0.125);
  });

  it('returns contiguous chunks that rebuild the input exactly, with times in the original time line', () => {
    const x = noiseWithDips(95, [31 * SR, 61 * SR, 88 * SR]);
    const chunks = splitAudioIntoChunks(x, 30);
    let at = 0;
    for (const c of chunks) {
      expect(c.start * SR).toBe(at);
      const length = Math.round((c.end - c.start) * SR);
      expect(Array.from(c.pcm.subarray(0, length))).toEqual(Array.from(x.subarray(at, at + length)));
      at += length;
    }
    expect(at).toBe(x.length);
    for (const c of chunks) expect(c.end - c.start).toBeLessThanOrEqual(35);
  });

  it('falls back to the exact limit when the search window is too small, and pads a short tail to 0.5 s', () => {
    const x = new Float32Array(2 * SR + 1000).fill(0.3);
    const chunks = splitAudioIntoChunks(x, 1, 0.001);
    expect(chunks.map((c) => c.start)).toEqual([0, 1, 2]);
    const tail = chunks[2]!;
    expect(tail.end - tail.start).toBeCloseTo(1000 / SR, 9);
    expect(tail.pcm.length).toBe(SR / 2);
    expect(tail.pcm[999]).toBeCloseTo(0.3);
    expect(tail.pcm[1000]).toBe(0);
  });

  it('uses a configurable limit', () => {
    const x = noiseWithDips(48, [9 * SR, 19 * SR, 29 * SR, 39 * SR]);
    expect(splitAudioIntoChunks(x, 10).length).toBe(5);
    expect(splitAudioIntoChunks(x, 60).length).toBe(1);
  });
});
