import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AudioError } from '../../src/audio/errors.js';
import { decodeWavToPcm, floatRangeNormalize, SAMPLE_RATE, toModelPcm, toMono } from '../../src/audio/pcm.js';
import { sharedPath } from '../support/shared.js';
import { encodeWav } from '../support/wav-writer.js';

const f32 = (values: number[]) => Float32Array.from(values);

function expectInvalid(fn: () => unknown, message: RegExp): void {
  expect(fn).toThrow(AudioError);
  expect(fn).toThrow(message);
  try {
    fn();
  } catch (e) {
    expect((e as AudioError).code).toBe('invalid');
  }
}

describe('toMono', () => {
  it('averages channels', () => {
    expect(Array.from(toMono([f32([1, 0.5]), f32([-1, 0.5])]))).toEqual([0, 0.5]);
    const three = toMono([f32([0.25, 1]), f32([0.5, -1]), f32([0.75, 0])]);
    expect(three[0]).toBeCloseTo(0.5, 7);
    expect(three[1]).toBe(0);
  });

  it('copies a single channel', () => {
    const x = f32([0.1, -0.2]);
    const y = toMono([x]);
    expect(y).toEqual(x);
    expect(y).not.toBe(x);
  });

  it('rejects NaN and infinite samples in any channel', () => {
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      expectInvalid(() => toMono([f32([0, 0, 0]), f32([0, bad, 0])]), /NaN or infinite/);
    }
    // Opposite infinities would sum to NaN, still caught.
    expectInvalid(() => toMono([f32([Infinity]), f32([-Infinity])]), /NaN or infinite/);
  });

  it('rejects no channels and channels of different lengths', () => {
    expectInvalid(() => toMono([]), /no channels/);
    expectInvalid(() => toMono([f32([0, 0]), f32([0])]), /differ in length/);
  });
});

describe('floatRangeNormalize', () => {
  it('divides by the peak only when it exceeds 1', () => {
    const x = f32([0.5, -2, 1.5]);
    const y = floatRangeNormalize(x);
    expect(Array.from(y)).toEqual([0.25, -1, 0.75]);
    expect(y).toBe(x); // in place
  });

  it('leaves audio within [-1, 1] (and silence) untouched', () => {
    expect(Array.from(floatRangeNormalize(f32([0.5, -1, 1, 0.25])))).toEqual([0.5, -1, 1, 0.25]);
    expect(Array.from(floatRangeNormalize(f32([0, 0])))).toEqual([0, 0]);
    expect(floatRangeNormalize(f32([]))).toHaveLength(0);
  });
});

describe('toModelPcm / decodeWavToPcm', () => {
  it('mixes a float WAV down and divides by the peak when it exceeds 1', () => {
    const wav = encodeWav({ channels: [f32([2, 1, -1, 0.25]), f32([2, 1, -3, 0.75])], sampleRate: SAMPLE_RATE, format: 'float32' });
    expect(Array.from(decodeWavToPcm(wav))).toEqual([1, 0.5, -1, 0.25]);
  });

  it('passes 16 kHz audio within range through unchanged', () => {
    const x = f32([0.5, -0.25, 0.125, -1]);
    expect(toModelPcm({ channels: [x], sampleRate: 16000 })).toEqual(x);
  });

  it('rejects NaN in a float WAV before resampling', () => {
    const wav = encodeWav({ channels: [f32([0, 0.5, Number.NaN, 0])], sampleRate: 44100, format: 'float32' });
    expectInvalid(() => decodeWavToPcm(wav), /NaN or infinite/);
  });

  it('resamples 48 kHz stereo to 16 kHz mono', () => {
    const n = 48000;
    const left = Float32Array.from({ length: n }, (_, i) => 0.6 * Math.sin((2 * Math.PI * 1000 * i) / 48000));
    const right = Float32Array.from({ length: n }, (_, i) => 0.2 * Math.sin((2 * Math.PI * 1000 * i) / 48000));
    const pcm = decodeWavToPcm(encodeWav({ channels: [left, right], sampleRate: 48000, format: 'pcm24' }));
    expect(pcm).toHaveLength(16000);
    for (let i = 1000; i < 15000; i++) expect(Math.abs(pcm[i]! - 0.4 * Math.sin((2 * Math.PI * 1000 * i) / 16000))).toBeLessThan(1e-4);
  });

  it('matches the independent reference (scipy resample_poly) for noise.wav to >= 40 dB SNR', () => {
    const pcm = decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav')));
    const raw = readFileSync(sharedPath('golden', 'mel', 'noise.pcm.f32'));
    const reference = new Float32Array(Uint8Array.from(raw).buffer);
    expect(pcm.length).toBe(138880);
    expect(reference.length).toBe(138880);
    let signal = 0;
    let error = 0;
    for (let i = 100; i < pcm.length - 100; i++) {
      signal += reference[i]! ** 2;
      error += (reference[i]! - pcm[i]!) ** 2;
    }
    // ~49.7 dB measured: the two filters differ only in their transition bands near 8 kHz.
    expect(10 * Math.log10(signal / error)).toBeGreaterThan(40);
  });
});
