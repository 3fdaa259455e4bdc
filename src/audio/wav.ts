import { AudioError } from './errors.js';

export interface DecodedAudio {
  /** One array per channel, all the same length, nominally in [-1, 1]. */
  channels: Float32Array[];
  sampleRate: number;
}

export const WAVE_FORMAT_PCM = 1;
export const WAVE_FORMAT_IEEE_FLOAT = 3;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;
const MAX_SAMPLE_RATE = 1_000_000;
/** Size field value meaning "see ds64" (RF64) or "unknown, read to the end" (streaming writers). */
const SIZE_UNKNOWN = 0xffffffff;

type SampleKind = 'pcm' | 'float';

interface Format {
  kind: SampleKind;
  channels: number;
  sampleRate: number;
  bitsPerSample: number;
  blockAlign: number;
}

function fourCC(bytes: Uint8Array, offset: number): string {
  return String.fromCharCode(bytes[offset] ?? 0, bytes[offset + 1] ?? 0, bytes[offset + 2] ?? 0, bytes[offset + 3] ?? 0);
}

/** RIFF/WAVE, or its 64-bit variants RF64 and BW64 (same layout, sizes in a ds64 chunk). */
function container(bytes: Uint8Array): 'RIFF' | 'RF64' | undefined {
  if (bytes.length < 12 || fourCC(bytes, 8) !== 'WAVE') return undefined;
  const id = fourCC(bytes, 0);
  if (id === 'RIFF') return 'RIFF';
  if (id === 'RF64' || id === 'BW64') return 'RF64';
  return undefined;
}

export function isWav(bytes: Uint8Array): boolean {
  return container(bytes) !== undefined;
}

function parseFmt(view: DataView, offset: number, size: number): Format {
  if (size < 16) throw new AudioError('invalid', `WAV 'fmt ' chunk is ${size} bytes long; at least 16 are required`);
  let tag = view.getUint16(offset, true);
  const channels = view.getUint16(offset + 2, true);
  const sampleRate = view.getUint32(offset + 4, true);
  const blockAlign = view.getUint16(offset + 12, true);
  const bitsPerSample = view.getUint16(offset + 14, true);

  if (tag === WAVE_FORMAT_EXTENSIBLE) {
    if (size < 40) throw new AudioError('invalid', `WAV extensible 'fmt ' chunk is ${size} bytes long; 40 are required`);
    // The sub-format GUID starts with the plain format tag it stands for.
    tag = view.getUint16(offset + 24, true);
  }
  let kind: SampleKind;
  if (tag === WAVE_FORMAT_PCM) kind = 'pcm';
  else if (tag === WAVE_FORMAT_IEEE_FLOAT) kind = 'float';
  else {
    throw new AudioError(
      'unsupported_format',
      `WAV format tag ${tag} (0x${tag.toString(16).padStart(4, '0')}) is not supported; only PCM (1) and IEEE float (3) WAV files are accepted`,
    );
  }

  if (channels === 0) throw new AudioError('invalid', 'WAV header declares 0 channels');
  if (sampleRate === 0 || sampleRate > MAX_SAMPLE_RATE) {
    throw new AudioError('invalid', `WAV header declares a sample rate of ${sampleRate} Hz; expected 1 to ${MAX_SAMPLE_RATE} Hz`);
  }
  const depths = kind === 'pcm' ? [8, 16, 24, 32] : [32, 64];
  if (!depths.includes(bitsPerSample)) {
    throw new AudioError(
      'invalid',
      `WAV ${kind === 'pcm' ? 'PCM' : 'float'} data with ${bitsPerSample} bits per sample is not supported; expected ${depths.join(', ')}`,
    );
  }
  const expectedAlign = channels * (bitsPerSample / 8);
  if (blockAlign !== expectedAlign) {
    throw new AudioError(
      'invalid',
      `WAV header declares a block size of ${blockAlign} bytes, but ${channels} channel(s) of ${bitsPerSample}-bit samples need ${expectedAlign}`,
    );
  }
  return { kind, channels, sampleRate, bitsPerSample, blockAlign };
}

/** Reads the 64-bit data size from an RF64 ds64 chunk (riff size, data size, sample count, ...). */
function parseDs64(view: DataView, offset: number, size: number): number | undefined {
  if (size < 16) return undefined;
  // Sizes past 2^53 cannot be real here; the caller clamps to the bytes present anyway.
  return Number(view.getBigUint64(offset + 8, true));
}

interface Span {
  offset: number;
  size: number;
}

/**
 * Where the fmt and data chunks are. Chunk sizes are never trusted: a data chunk claiming more bytes than
 * the file holds is cut to what is there; an incomplete non-data chunk ends the walk.
 */
function chunkLayout(bytes: Uint8Array, view: DataView, variant: 'RIFF' | 'RF64'): { fmt?: Span; data?: Span } {
  let fmt: Span | undefined;
  let data: Span | undefined;
  let ds64DataSize: number | undefined;
  let offset = 12;
  while (offset + 8 <= bytes.length) {
    const id = fourCC(bytes, offset);
    let size = view.getUint32(offset + 4, true);
    const body = offset + 8;
    const available = bytes.length - body;

    if (id === 'data' && data === undefined) {
      if (variant === 'RF64' && size === SIZE_UNKNOWN && ds64DataSize !== undefined) size = ds64DataSize;
      data = { offset: body, size: Math.min(size, available) };
      // A clamped (or open-ended) data chunk runs to the end of the file: nothing follows it.
      if (size >= available) break;
    } else if (size > available) {
      break; // truncated file: an incomplete non-data chunk is useless.
    } else if (id === 'fmt ') {
      fmt ??= { offset: body, size };
    } else if (id === 'ds64' && variant === 'RF64') {
      ds64DataSize = parseDs64(view, body, size);
    }
    // Chunks are word aligned: odd sizes are followed by one pad byte.
    offset = body + size + (size & 1);
  }
  return { ...(fmt ? { fmt } : {}), ...(data ? { data } : {}) };
}

export interface WavHeader {
  /** format tag (the sub-format's for WAVE_FORMAT_EXTENSIBLE) */
  tag: number;
  channels: number;
  sampleRate: number;
  /** whole frames present in the file */
  frames?: number;
}

/** The fmt chunk's numbers and the frames present, without reading or validating samples (for limits first). */
export function readWavHeader(bytes: Uint8Array): WavHeader | undefined {
  const variant = container(bytes);
  if (variant === undefined) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { fmt, data } = chunkLayout(bytes, view, variant);
  if (!fmt || fmt.size < 16) return undefined;
  let tag = view.getUint16(fmt.offset, true);
  if (tag === WAVE_FORMAT_EXTENSIBLE && fmt.size >= 40) tag = view.getUint16(fmt.offset + 24, true);
  const blockAlign = view.getUint16(fmt.offset + 12, true);
  return {
    tag,
    channels: view.getUint16(fmt.offset + 2, true),
    sampleRate: view.getUint32(fmt.offset + 4, true),
    ...(data && blockAlign > 0 ? { frames: Math.floor(data.size / blockAlign) } : {}),
  };
}

/** Decodes a PCM or IEEE-float WAV file into per-channel float samples. */
export function decodeWav(bytes: Uint8Array): DecodedAudio {
  const variant = container(bytes);
  if (variant === undefined) throw new AudioError('invalid', 'not a WAV file: missing RIFF/WAVE header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { fmt, data } = chunkLayout(bytes, view, variant);
  if (fmt === undefined) throw new AudioError('invalid', "WAV file has no (complete) 'fmt ' chunk");
  const format = parseFmt(view, fmt.offset, fmt.size);
  if (data === undefined) throw new AudioError('invalid', "WAV file has no 'data' chunk");
  return { channels: readSamples(view, data.offset, data.size, format), sampleRate: format.sampleRate };
}

function readSamples(view: DataView, offset: number, size: number, format: Format): Float32Array[] {
  const { channels: count, blockAlign, bitsPerSample, kind } = format;
  const frames = Math.floor(size / blockAlign);
  const bytesPerSample = bitsPerSample / 8;
  const channels: Float32Array[] = [];
  for (let c = 0; c < count; c++) {
    const out = new Float32Array(frames);
    let p = offset + c * bytesPerSample;
    if (kind === 'float' && bitsPerSample === 32) {
      for (let i = 0; i < frames; i++, p += blockAlign) out[i] = view.getFloat32(p, true);
    } else if (kind === 'float') {
      for (let i = 0; i < frames; i++, p += blockAlign) out[i] = view.getFloat64(p, true);
    } else if (bitsPerSample === 8) {
      for (let i = 0; i < frames; i++, p += blockAlign) out[i] = (view.getUint8(p) - 128) / 128;
    } else if (bitsPerSample === 16) {
      for (let i = 0; i < frames; i++, p += blockAlign) out[i] = view.getInt16(p, true) / 32768;
    } else if (bitsPerSample === 24) {
      for (let i = 0; i < frames; i++, p += blockAlign) {
        // Shift the 24-bit value to the top of an int32 and back to sign-extend it.
        const v = ((view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getUint8(p + 2) << 16)) << 8) >> 8;
        out[i] = v / 8388608;
      }
    } else {
      for (let i = 0; i < frames; i++, p += blockAlign) out[i] = view.getInt32(p, true) / 2147483648;
    }
    channels.push(out);
  }
  return channels;
}
