import { describe, expect, it } from 'vitest';
import { ALAW_TABLE, MULAW_TABLE } from '../../src/audio/g711.js';
import { resample } from '../../src/audio/resample.js';
import { InputAudio, StreamResampler } from '../../src/live/input-audio.js';
import { mulberry32 } from '../../tools/random.js';
import { concat } from '../support/speech-mix.js';

/** A test signal: two tones and some noise, within [-0.9, 0.9]. */
function signal(n: number, rate: number, seed = 1): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / rate) + 0.3 * Math.sin((2 * Math.PI * 3100 * i) / rate) + 0.1 * (rand() - 0.5));
}

function pcm16Bytes(x: Float32Array): Uint8Array {
  const bytes = new Uint8Array(2 * x.length);
  const view = new DataView(bytes.buffer);
  x.forEach((v, i) => view.setInt16(2 * i, Math.round(v * 32767), true));
  return bytes;
}

/** Cuts `bytes` at random places (pieces of 0 to maxPiece bytes, odd sizes included). */
function pieces(bytes: Uint8Array, maxPiece: number, seed: number): Uint8Array[] {
  const rand = mulberry32(seed);
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const n = Math.floor(rand() * (maxPiece + 1));
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}


describe('StreamResampler', () => {
  for (const from of [24000, 8000]) {
    it(`resamples ${from} Hz pieces exactly as the whole stream, holding back only the kernel's reach`, () => {
      const x = signal(from, from);
      const whole = resample(x, from, 16000);
      const r = new StreamResampler(from);
      const rand = mulberry32(from);
      const out: Float32Array[] = [];
      for (let at = 0; at < x.length; ) {
        const n = Math.floor(rand() * 700);
        out.push(r.push(x.subarray(at, at + n)));
        at += n;
      }
      const streamed = concat(...out);
      expect(whole.length - streamed.length).toBeLessThan(80); // under 5 ms
      expect(streamed).toEqual(whole.subarray(0, streamed.length));
    });
  }
});

describe('InputAudio', () => {
  it('decodes PCM16 cut at odd byte counts like the whole buffer (a lone byte waits for its pair)', () => {
    const x = signal(16000, 16000);
    const bytes = pcm16Bytes(x);
    const input = new InputAudio({ encoding: 'pcm16', sampleRate: 16000 });
    const decoded = concat(...pieces(bytes, 9, 7).map((p) => input.push(p)));
    expect(decoded.length).toBe(x.length);
    for (let i = 0; i < x.length; i++) expect(Math.abs(decoded[i]! - x[i]!)).toBeLessThanOrEqual(2 / 32768);
    expect(decoded[5]).toBe(new DataView(bytes.buffer).getInt16(10, true) / 32768);
  });

  it('turns 24 kHz PCM16 in pieces into 16 kHz samples equal to resampling the whole', () => {
    const x = signal(24000, 24000);
    const bytes = pcm16Bytes(x);
    const exact = new Float32Array(x.length);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < x.length; i++) exact[i] = view.getInt16(2 * i, true) / 32768;
    const input = new InputAudio({ encoding: 'pcm16', sampleRate: 24000 });
    const streamed = concat(...pieces(bytes, 1001, 3).map((p) => input.push(p)));
    const whole = resample(exact, 24000, 16000);
    expect(streamed.length).toBeGreaterThan(whole.length - 80);
    expect(streamed).toEqual(whole.subarray(0, streamed.length));
  });

  for (const [encoding, table] of [['mulaw', MULAW_TABLE], ['alaw', ALAW_TABLE]] as const) {
    it(`turns 8 kHz ${encoding} in pieces into 16 kHz samples`, () => {
      const codes = Uint8Array.from({ length: 8000 }, (_, i) => (i * 37) & 0xff);
      const linear = Float32Array.from(codes, (c) => table[c]! / 32768);
      const input = new InputAudio({ encoding, sampleRate: 8000 });
      const streamed = concat(...pieces(codes, 333, 5).map((p) => input.push(p)));
      const whole = resample(linear, 8000, 16000);
      expect(streamed.length).toBeGreaterThan(whole.length - 80);
      expect(streamed).toEqual(whole.subarray(0, streamed.length));
    });
  }
});
