import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AudioError, type AudioErrorCode } from '../../src/audio/errors.js';
import { decodeWav, isWav } from '../../src/audio/wav.js';
import { sharedPath } from '../support/shared.js';
import { encodeWav, PCM_SCALE, type WavSampleFormat } from '../support/wav-writer.js';
import { mulberry32 as rng } from '../../tools/random.js';


function noise(n: number, seed: number, amplitude = 0.99): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * amplitude);
}

function expectAudioError(fn: () => unknown, code: AudioErrorCode, message?: RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(AudioError);
  expect((error as AudioError).code).toBe(code);
  if (message) expect((error as AudioError).message).toMatch(message);
}

/** Plain 16-bit stereo WAV: fmt body at 20 (tag 20, channels 22, rate 24, align 32, bits 34), data at 36. */
function baseWav(frames = 10): Uint8Array {
  return encodeWav({ channels: [noise(frames, 1), noise(frames, 2)], sampleRate: 16000, format: 'pcm16' });
}

function patched(patch: (view: DataView, bytes: Uint8Array) => void, bytes = baseWav()): Uint8Array {
  patch(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes);
  return bytes;
}

function ascii(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

const FORMATS: WavSampleFormat[] = ['pcm8', 'pcm16', 'pcm24', 'pcm32', 'float32', 'float64'];

describe('decodeWav round trips', () => {
  for (const format of FORMATS) {
    for (const extensible of [false, true]) {
      for (const extraChunks of [false, true]) {
        it(`${format}${extensible ? ' extensible' : ''}${extraChunks ? ' with extra chunks' : ''}`, () => {
          // 3 x 101 frames: the 8-bit data chunk has an odd size, so its pad byte is exercised.
          const channels = [noise(101, 10), noise(101, 11), noise(101, 12)];
          const decoded = decodeWav(encodeWav({ channels, sampleRate: 22050, format, extensible, extraChunks }));
          expect(decoded.sampleRate).toBe(22050);
          expect(decoded.channels).toHaveLength(3);
          channels.forEach((expected, c) => {
            const got = decoded.channels[c]!;
            expect(got).toHaveLength(101);
            if (format === 'float32' || format === 'float64') {
              expect(got).toEqual(expected);
            } else {
              // Within half a quantisation step (plus float32 rounding of the result).
              const tolerance = 0.5 / PCM_SCALE[format] + 1e-7;
              for (let i = 0; i < expected.length; i++) expect(Math.abs(got[i]! - expected[i]!)).toBeLessThanOrEqual(tolerance);
            }
          });
        });
      }
    }
  }

  it('maps integer extremes exactly', () => {
    const decodeRaw = (format: WavSampleFormat, bytesPerSample: number, raw: number[]) => {
      const wav = encodeWav({ channels: [new Float32Array(raw.length / bytesPerSample)], sampleRate: 8000, format });
      wav.set(raw, 44);
      return Array.from(decodeWav(wav).channels[0]!);
    };
    expect(decodeRaw('pcm8', 1, [0, 128, 255])).toEqual([-1, 0, 127 / 128]);
    expect(decodeRaw('pcm16', 2, [0x00, 0x80, 0xff, 0x7f, 0xff, 0xff])).toEqual([-1, 32767 / 32768, -1 / 32768]);
    expect(decodeRaw('pcm24', 3, [0, 0, 0x80, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff])).toEqual([
      -1,
      Math.fround(8388607 / 8388608),
      -1 / 8388608,
    ]);
    expect(decodeRaw('pcm32', 4, [0, 0, 0, 0x80, 0, 0, 0, 0x40])).toEqual([-1, 0.5]);
  });

  it('de-interleaves many channels in order', () => {
    const channels = Array.from({ length: 6 }, (_, c) => new Float32Array(5).fill((c + 1) / 8));
    const decoded = decodeWav(encodeWav({ channels, sampleRate: 48000, format: 'pcm16', extensible: true }));
    expect(decoded.channels.map((ch) => Array.from(ch))).toEqual(channels.map((ch) => Array.from(ch)));
  });

  it('reads from a Uint8Array view that does not start at its buffer start', () => {
    const wav = baseWav();
    const padded = new Uint8Array(wav.length + 3);
    padded.set(wav, 3);
    expect(decodeWav(padded.subarray(3))).toEqual(decodeWav(wav));
  });

  it("accepts a 'fmt ' chunk after the data chunk", () => {
    const wav = baseWav();
    const reordered = new Uint8Array(wav.length);
    reordered.set(wav.subarray(0, 12));
    reordered.set(wav.subarray(36), 12); // data chunk
    reordered.set(wav.subarray(12, 36), 12 + wav.length - 36); // fmt chunk
    expect(decodeWav(reordered)).toEqual(decodeWav(wav));
  });
});

describe('decodeWav with untrustworthy sizes', () => {
  it('clamps a data chunk that claims more bytes than present to whole frames', () => {
    const wav = baseWav(100);
    const full = decodeWav(wav);
    const truncated = decodeWav(wav.subarray(0, wav.length - 7)); // 393 of 400 data bytes
    expect(truncated.channels.map((ch) => ch.length)).toEqual([98, 98]);
    expect(truncated.channels[0]).toEqual(full.channels[0]!.subarray(0, 98));
    expect(truncated.channels[1]).toEqual(full.channels[1]!.subarray(0, 98));
  });

  it('reads to the end when the data size is 0xFFFFFFFF (streaming writers)', () => {
    const wav = baseWav(50);
    const streamed = patched((v) => {
      v.setUint32(4, 0xffffffff, true);
      v.setUint32(40, 0xffffffff, true);
    }, baseWav(50));
    expect(decodeWav(streamed)).toEqual(decodeWav(wav));
  });

  it('decodes an empty data chunk to empty channels', () => {
    const decoded = decodeWav(encodeWav({ channels: [new Float32Array(0)], sampleRate: 16000, format: 'pcm16' }));
    expect(decoded.channels.map((ch) => ch.length)).toEqual([0]);
  });

  it('decodes RF64 using the ds64 data size', () => {
    const wav = baseWav(20);
    const ds64 = new Uint8Array(28); // riff size, data size, sample count (64-bit each), table length
    new DataView(ds64.buffer).setBigUint64(8, 40n, true); // data: only the first 10 of 20 frames
    const rf64 = Uint8Array.from([
      ...ascii('RF64'), ...u32(0xffffffff), ...ascii('WAVE'),
      ...ascii('ds64'), ...u32(28), ...ds64,
      ...wav.subarray(12, 36), // fmt chunk
      ...ascii('data'), ...u32(0xffffffff), ...wav.subarray(44),
    ]);
    expect(isWav(rf64)).toBe(true);
    const decoded = decodeWav(rf64);
    const full = decodeWav(wav);
    expect(decoded.channels.map((ch) => ch.length)).toEqual([10, 10]);
    expect(decoded.channels[0]).toEqual(full.channels[0]!.subarray(0, 10));
    expect(decoded.channels[1]).toEqual(full.channels[1]!.subarray(0, 10));
  });
});

describe('isWav', () => {
  it('sniffs RIFF/WAVE and RF64 only', () => {
    expect(isWav(baseWav())).toBe(true);
    expect(isWav(ascii('RIFF\0\0\0\0AVI LIST'))).toBe(false);
    expect(isWav(ascii('ID3\x04\0\0\0\0\0\0\0\0\0'))).toBe(false);
    expect(isWav(ascii('RIFF'))).toBe(false);
    expect(isWav(new Uint8Array(0))).toBe(false);
  });
});

describe('decodeWav rejections', () => {
  const cases: [string, () => Uint8Array, AudioErrorCode, RegExp][] = [
    ['empty input', () => new Uint8Array(0), 'invalid', /RIFF\/WAVE/],
    ['an Ogg file', () => ascii('OggS\0\x02\0\0\0\0\0\0\0\0'), 'invalid', /not a WAV/],
    ['RIFF that is not WAVE', () => ascii('RIFF\x04\0\0\0AVI '), 'invalid', /not a WAV/],
    ['no fmt chunk', () => patched((_, b) => b.set(ascii('junk'), 12)), 'invalid', /'fmt '/],
    ['no data chunk', () => patched((_, b) => b.set(ascii('junk'), 36)), 'invalid', /'data'/],
    ['a truncated fmt chunk', () => baseWav().subarray(0, 30), 'invalid', /'fmt '/],
    ['a fmt chunk shorter than 16 bytes', () => patched((v) => v.setUint32(16, 14, true)), 'invalid', /14 bytes/],
    ['0 channels', () => patched((v) => v.setUint16(22, 0, true)), 'invalid', /declares 0 channels/],
    ['sample rate 0', () => patched((v) => v.setUint32(24, 0, true)), 'invalid', /sample rate of 0 Hz/],
    ['an absurd sample rate', () => patched((v) => v.setUint32(24, 2_000_000, true)), 'invalid', /2000000 Hz/],
    ['12-bit PCM', () => patched((v) => v.setUint16(34, 12, true)), 'invalid', /12 bits per sample/],
    [
      '16-bit float',
      () =>
        patched((v) => {
          v.setUint16(20, 3, true);
          v.setUint16(34, 16, true);
        }),
      'invalid',
      /float data with 16 bits/,
    ],
    ['a block align mismatch', () => patched((v) => v.setUint16(32, 3, true)), 'invalid', /block size of 3 bytes.*need 4/],
    ['MP3-in-WAV (tag 0x55)', () => patched((v) => v.setUint16(20, 0x55, true)), 'unsupported_format', /tag 85 \(0x0055\)/],
    ['A-law (tag 6)', () => patched((v) => v.setUint16(20, 6, true)), 'unsupported_format', /tag 6/],
    [
      'an extensible ADPCM sub-format',
      () => patched((v) => v.setUint16(44, 2, true), encodeWav({ channels: [noise(4, 1)], sampleRate: 8000, format: 'pcm16', extensible: true })),
      'unsupported_format',
      /tag 2 /,
    ],
    ['an extensible fmt chunk shorter than 40 bytes', () => patched((v) => v.setUint16(20, 0xfffe, true)), 'invalid', /extensible/],
  ];
  for (const [name, make, code, message] of cases) {
    it(`rejects ${name} with ${code}`, () => expectAudioError(() => decodeWav(make()), code, message));
  }
});

describe('decodeWav fuzz', () => {
  it('only ever succeeds or throws AudioError on mutated and truncated WAVs', () => {
    const bases = [
      baseWav(64),
      encodeWav({ channels: [noise(33, 4)], sampleRate: 44100, format: 'pcm24', extraChunks: true }),
      encodeWav({ channels: [noise(20, 5), noise(20, 6)], sampleRate: 48000, format: 'float32', extensible: true, extraChunks: true }),
      encodeWav({ channels: [noise(31, 7)], sampleRate: 8000, format: 'pcm8', extraChunks: true }),
      encodeWav({ channels: [noise(16, 8)], sampleRate: 96000, format: 'float64' }),
    ];
    const r = rng(1234);
    const pick = (n: number) => Math.floor(r() * n);
    let successes = 0;
    let failures = 0;
    for (let iter = 0; iter < 600; iter++) {
      const base = bases[pick(bases.length)]!;
      let bytes = base.slice();
      const flips = 1 + pick(4);
      for (let f = 0; f < flips; f++) {
        const at = pick(Math.min(bytes.length, 80));
        // Mix random bytes with values that stress size fields.
        bytes[at] = r() < 0.3 ? [0, 0xff, 0x7f, 0x80][pick(4)]! : pick(256);
      }
      if (r() < 0.3) bytes = bytes.subarray(0, pick(bytes.length + 1));
      try {
        const decoded = decodeWav(bytes);
        successes++;
        expect(decoded.channels.length).toBeGreaterThan(0);
        for (const ch of decoded.channels) expect(ch.length).toBe(decoded.channels[0]!.length);
        expect(decoded.sampleRate).toBeGreaterThan(0);
      } catch (e) {
        failures++;
        if (!(e instanceof AudioError)) throw new Error(`iteration ${iter}: ${String(e)}`);
      }
    }
    // Both outcomes must actually occur, or the fuzz is not exercising anything.
    expect(successes).toBeGreaterThan(50);
    expect(failures).toBeGreaterThan(50);
  });

  it('only ever succeeds or throws AudioError on random bytes behind a WAVE header', () => {
    const r = rng(99);
    for (let iter = 0; iter < 300; iter++) {
      const bytes = Uint8Array.from({ length: 12 + Math.floor(r() * 120) }, () => Math.floor(r() * 256));
      bytes.set(ascii(r() < 0.5 ? 'RIFF' : 'RF64'));
      bytes.set(ascii('WAVE'), 8);
      // Plant chunk ids so the walk reaches fmt/data/ds64 parsing often.
      for (const id of ['fmt ', 'data', 'ds64']) {
        const at = 12 + Math.floor(r() * (bytes.length - 12));
        if (r() < 0.6 && at + 4 <= bytes.length) bytes.set(ascii(id), at);
      }
      try {
        decodeWav(bytes);
      } catch (e) {
        if (!(e instanceof AudioError)) throw new Error(`iteration ${iter}: ${String(e)}`);
      }
    }
  });
});

describe('real clips (voices-in-the-wild)', () => {
  const seconds: Record<string, number> = {
    distortion: 7.36,
    dropout: 6.68,
    echo: 7.48,
    far_field: 5.92,
    mixed: 5.08,
    noise: 8.68,
    obstructed: 8.8,
    recording: 5.0,
  };
  for (const [name, duration] of Object.entries(seconds)) {
    it(`${name}.wav: 24 kHz mono, ${duration} s`, () => {
      const bytes = readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`));
      expect(isWav(bytes)).toBe(true);
      const decoded = decodeWav(bytes);
      expect(decoded.sampleRate).toBe(24000);
      expect(decoded.channels).toHaveLength(1);
      const samples = decoded.channels[0]!;
      expect(samples.length / decoded.sampleRate).toBeCloseTo(duration, 9);
      let peak = 0;
      for (const x of samples) peak = Math.max(peak, Math.abs(x));
      expect(peak).toBeGreaterThan(0.01);
      expect(peak).toBeLessThanOrEqual(1);
    });
  }
});
