import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';

/**
 * The page's AudioWorklet (web/pcm-worklet.js) run outside a browser: its file is evaluated with the three names
 * an AudioWorkletGlobalScope gives it (sampleRate, AudioWorkletProcessor with a port, registerProcessor).
 */
interface Processor {
  process(inputs: Float32Array[][]): boolean;
  port: { posted: unknown[]; onmessage: ((e: { data: unknown }) => void) | null };
}

const source = readFileSync(join(repoRoot, 'web', 'pcm-worklet.js'), 'utf8');

function processorAt(contextRate: number): Processor {
  class AudioWorkletProcessor {
    port = { posted: [] as unknown[], onmessage: null, postMessage(m: unknown) { this.posted.push(m); } };
  }
  let made: Processor | undefined;
  const register = (name: string, ctor: new () => Processor) => {
    expect(name).toBe('pcm16-24k');
    made = new ctor();
  };
  new Function('registerProcessor', 'AudioWorkletProcessor', 'sampleRate', source)(register, AudioWorkletProcessor, contextRate);
  return made!;
}

/** Feeds `seconds` of a sine in 128-frame render quanta (as the browser does), flushes, returns what was posted. */
function run(contextRate: number, hz: number, seconds: number, channels = 1): { batches: ArrayBuffer[]; pcm: Float64Array; last: unknown } {
  const p = processorAt(contextRate);
  const n = Math.round(contextRate * seconds);
  for (let i = 0; i < n; i += 128) {
    const quantum = new Float32Array(Math.min(128, n - i));
    for (let j = 0; j < quantum.length; j++) quantum[j] = 0.5 * Math.sin((2 * Math.PI * hz * (i + j)) / contextRate);
    expect(p.process([Array.from({ length: channels }, () => quantum)])).toBe(true);
  }
  p.port.onmessage!({ data: 'flush' });
  const batches = p.port.posted.filter((m): m is ArrayBuffer => m instanceof ArrayBuffer);
  const bytes = Buffer.concat(batches.map((b) => Buffer.from(b)));
  const pcm = new Float64Array(bytes.length / 2);
  for (let i = 0; i < pcm.length; i++) pcm[i] = bytes.readInt16LE(i * 2) / 32768;
  return { batches, pcm, last: p.port.posted.at(-1) };
}

/** RMS difference from the same sine sampled at 24 kHz, away from the edges. */
function errorAgainstSine(pcm: Float64Array, hz: number): number {
  let sum = 0;
  const from = 2400;
  const to = pcm.length - 2400;
  for (let i = from; i < to; i++) sum += (pcm[i]! - 0.5 * Math.sin((2 * Math.PI * hz * i) / 24000)) ** 2;
  return Math.sqrt(sum / (to - from));
}

describe('the page\'s PCM worklet', () => {
  for (const rate of [48000, 44100, 24000, 16000]) {
    it(`turns ${rate} Hz microphone samples into 24 kHz PCM16 LE in 100 ms batches, then the rest on flush`, () => {
      const { batches, pcm, last } = run(rate, 440, 2);
      expect(pcm.length).toBe(48000);
      // 2 s = 20 full batches of 2400 samples (4800 bytes); the flush adds none here and says so.
      expect(batches.map((b) => b.byteLength)).toEqual(Array(20).fill(4800));
      expect(last).toBe('flushed');
      // Same waveform, in time: well under one PCM16 step of error per sample would be ~3e-5; band-edge ripple allows more.
      expect(errorAgainstSine(pcm, 440)).toBeLessThan(1e-3);
    });
  }

  it('filters what 24 kHz cannot carry instead of folding it into the speech band', () => {
    // 15 kHz at 48 kHz would alias to 9 kHz with plain decimation.
    const { pcm } = run(48000, 15000, 1);
    const rms = Math.sqrt(pcm.slice(2400, -2400).reduce((s, x) => s + x * x, 0) / (pcm.length - 4800));
    expect(rms).toBeLessThan(0.5 / Math.SQRT2 / 100); // at least 40 dB down
  });

  it('mixes channels to mono and posts a partial last batch on flush', () => {
    const { batches, pcm, last } = run(48000, 440, 0.25, 2);
    expect(batches.map((b) => b.byteLength)).toEqual([4800, 4800, 2400]);
    expect(last).toBe('flushed');
    expect(errorAgainstSine(pcm, 440)).toBeLessThan(1e-3);
  });
});
