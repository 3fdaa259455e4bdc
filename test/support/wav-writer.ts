/** Minimal WAV encoder for tests: PCM 8/16/24/32-bit and IEEE float 32/64, plain or extensible. */

export type WavSampleFormat = 'pcm8' | 'pcm16' | 'pcm24' | 'pcm32' | 'float32' | 'float64';

export interface EncodeWavOptions {
  channels: Float32Array[];
  sampleRate: number;
  format: WavSampleFormat;
  /** Write a WAVE_FORMAT_EXTENSIBLE fmt chunk (40 bytes, sub-format GUID). */
  extensible?: boolean;
  /** Surround fmt/data with odd-sized LIST, fact and trailing chunks (with their pad bytes). */
  extraChunks?: boolean;
}

const BITS: Record<WavSampleFormat, number> = { pcm8: 8, pcm16: 16, pcm24: 24, pcm32: 32, float32: 32, float64: 64 };

/** Quantisation scale of a PCM format: the decoder divides by it. */
export const PCM_SCALE: Record<'pcm8' | 'pcm16' | 'pcm24' | 'pcm32', number> = {
  pcm8: 128,
  pcm16: 32768,
  pcm24: 8388608,
  pcm32: 2147483648,
};

function quantise(x: number, scale: number): number {
  return Math.max(-scale, Math.min(scale - 1, Math.round(x * scale)));
}

function chunk(id: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + body.length + (body.length & 1));
  for (let i = 0; i < 4; i++) out[i] = id.charCodeAt(i);
  new DataView(out.buffer).setUint32(4, body.length, true);
  out.set(body, 8);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

export function encodeWav({ channels, sampleRate, format, extensible = false, extraChunks = false }: EncodeWavOptions): Uint8Array {
  const count = channels.length;
  const frames = channels[0]?.length ?? 0;
  const bits = BITS[format];
  const bytesPerSample = bits / 8;
  const blockAlign = count * bytesPerSample;
  const isFloat = format === 'float32' || format === 'float64';
  const tag = isFloat ? 3 : 1;

  const fmt = new Uint8Array(extensible ? 40 : 16);
  const f = new DataView(fmt.buffer);
  f.setUint16(0, extensible ? 0xfffe : tag, true);
  f.setUint16(2, count, true);
  f.setUint32(4, sampleRate, true);
  f.setUint32(8, sampleRate * blockAlign, true);
  f.setUint16(12, blockAlign, true);
  f.setUint16(14, bits, true);
  if (extensible) {
    f.setUint16(16, 22, true); // cbSize
    f.setUint16(18, bits, true); // valid bits
    f.setUint32(20, 0, true); // channel mask
    // KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT: {0000000X-0000-0010-8000-00AA00389B71}
    const guid = [tag, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71];
    fmt.set(guid, 24);
  }

  const data = new Uint8Array(frames * blockAlign);
  const d = new DataView(data.buffer);
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < count; c++) {
      const x = channels[c]![i]!;
      const p = i * blockAlign + c * bytesPerSample;
      switch (format) {
        case 'pcm8':
          d.setUint8(p, quantise(x, PCM_SCALE.pcm8) + 128);
          break;
        case 'pcm16':
          d.setInt16(p, quantise(x, PCM_SCALE.pcm16), true);
          break;
        case 'pcm24': {
          const v = quantise(x, PCM_SCALE.pcm24);
          d.setUint8(p, v & 0xff);
          d.setUint8(p + 1, (v >> 8) & 0xff);
          d.setUint8(p + 2, (v >> 16) & 0xff);
          break;
        }
        case 'pcm32':
          d.setInt32(p, quantise(x, PCM_SCALE.pcm32), true);
          break;
        case 'float32':
          d.setFloat32(p, x, true);
          break;
        case 'float64':
          d.setFloat64(p, x, true);
          break;
      }
    }
  }

  const text = (s: string) => new TextEncoder().encode(s);
  const chunks = extraChunks
    ? [
        chunk('LIST', text('INFOISFT\u0005\0\0\0test\0')), // 17 bytes: odd, padded
        chunk('fmt ', fmt),
        chunk('fact', new Uint8Array([frames & 0xff, (frames >> 8) & 0xff, 0, 0, 0x5a])), // odd
        chunk('data', data),
        chunk('id3 ', text('odd')),
      ]
    : [chunk('fmt ', fmt), chunk('data', data)];
  const body = concat([text('WAVE'), ...chunks]);
  return chunk('RIFF', body);
}
