import { AudioError } from './errors.js';
import { decodeWithFfmpeg, decoderCapabilities, type DecoderCapabilities, type StreamInfo } from './ffmpeg.js';
import { SAMPLE_RATE, floatRangeNormalize, toModelPcm } from './pcm.js';
import { sniffFormat } from './sniff.js';
import { WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_PCM, decodeWav, readWavHeader, type WavHeader } from './wav.js';

/**
 * Any upload -> 16 kHz mono float32 PCM. The format comes from the bytes (sniffFormat). PCM and float WAV are
 * decoded here (exact, no process to start); everything else goes through ffmpeg. Limits are checked from the
 * header before decoding and again on the decoded length.
 */

export interface DecodeLimits {
  /** longer audio is refused with AudioError 'too_long' */
  maxSeconds: number;
  /** wall-clock limit of an ffmpeg decode (probe included) */
  timeoutMs: number;
}

export const DEFAULT_DECODE_LIMITS: DecodeLimits = { maxSeconds: 7200, timeoutMs: 120_000 };

/**
 * What recordings of speech use: telephony (8 kHz, with margin below) to high-resolution recorders
 * (192 kHz), and up to 32 channels (microphone arrays). Beyond that an upload is junk or an attack on the
 * resampler and the channel mixer (64 channels, 1 kHz and 384 kHz are the issue's own hostile examples).
 */
export const MAX_CHANNELS = 32;
export const MIN_SAMPLE_RATE = 4000;
export const MAX_SAMPLE_RATE = 192_000;
/** OpenAI's minimum, 0.1 s. */
const MIN_SAMPLES = SAMPLE_RATE / 10;
/** No audio file that holds 0.1 s is smaller (a WAV header alone is 44 bytes). */
const MIN_FILE_BYTES = 32;

const ACCEPTED =
  'Supported formats: flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, wav, webm (also aac, aiff, amr, caf, mkv, mov, opus, 3gp).';

const unsupported = (message: string) => new AudioError('unsupported_format', message);

const tooLong = (seconds: number, maxSeconds: number) =>
  new AudioError('too_long', `Audio duration ${seconds.toFixed(2)} seconds is longer than ${maxSeconds} seconds, which is the maximum for this server.`);

/** Channel count, rate and duration, from a header or a probe, before any samples are decoded. */
function checkStream(label: string, info: Omit<StreamInfo, 'codec'>, maxSeconds: number): void {
  if (info.channels > MAX_CHANNELS) {
    throw new AudioError('invalid', `The ${label} file has ${info.channels} channels; at most ${MAX_CHANNELS} are supported.`);
  }
  if (info.sampleRate < MIN_SAMPLE_RATE || info.sampleRate > MAX_SAMPLE_RATE) {
    throw new AudioError(
      'invalid',
      `The ${label} file's sample rate is ${info.sampleRate} Hz; rates from ${MIN_SAMPLE_RATE} to ${MAX_SAMPLE_RATE} Hz are supported.`,
    );
  }
  if (info.seconds !== undefined && info.seconds > maxSeconds) throw tooLong(info.seconds, maxSeconds);
}

/** PCM/float WAV in this thread: limits from the header first, so nothing absurd is decoded or resampled. */
function decodeWavHere(bytes: Uint8Array, header: WavHeader | undefined, label: string, limits: DecodeLimits): Float32Array {
  // Zero channels or rate, or no fmt chunk at all: decodeWav says what is wrong.
  if (header && header.channels > 0 && header.sampleRate > 0) {
    const { channels, sampleRate, frames } = header;
    checkStream(label, { channels, sampleRate, ...(frames === undefined ? {} : { seconds: frames / sampleRate }) }, limits.maxSeconds);
  }
  return toModelPcm(decodeWav(bytes));
}

export async function decodeUpload(bytes: Uint8Array, limits: DecodeLimits): Promise<Float32Array> {
  if (bytes.length === 0) throw new AudioError('too_short', 'The uploaded file is empty.');
  if (bytes.length < MIN_FILE_BYTES) {
    throw new AudioError('invalid', `The uploaded file is only ${bytes.length} bytes long: too small to be an audio recording.`);
  }
  const sniffed = sniffFormat(bytes);
  if (sniffed.kind === 'not-audio') throw unsupported(`The file looks like ${sniffed.label}, not audio. ${ACCEPTED}`);
  if (sniffed.kind === 'unknown') throw unsupported(`The file's format was not recognised as audio. ${ACCEPTED}`);

  let pcm: Float32Array | undefined;
  let label = sniffed.label;
  if (sniffed.container === 'wav') {
    const header = readWavHeader(bytes);
    if (header === undefined || header.tag === WAVE_FORMAT_PCM || header.tag === WAVE_FORMAT_IEEE_FLOAT) pcm = decodeWavHere(bytes, header, label, limits);
    else label = `${label} (format tag ${header.tag})`;
  }
  if (pcm === undefined) {
    const check = (info: StreamInfo) => checkStream(label, info, limits.maxSeconds);
    pcm = floatRangeNormalize(await decodeWithFfmpeg(bytes, { container: sniffed.container, label, ...limits, check }));
  }
  if (pcm.length > limits.maxSeconds * SAMPLE_RATE) throw tooLong(pcm.length / SAMPLE_RATE, limits.maxSeconds);
  if (pcm.length < MIN_SAMPLES) {
    throw new AudioError('too_short', `Audio file is too short (${(pcm.length / SAMPLE_RATE).toFixed(3)} s). Minimum audio length is 0.1 seconds.`);
  }
  return pcm;
}

type LogFn = (obj: object | string, msg?: string) => void;

/**
 * One startup line on what can be decoded (pino-compatible logger): a warning naming the formats this server
 * cannot take when ffmpeg or one of its decoders is missing.
 */
export async function reportDecoderCapabilities(log: { info: LogFn; warn: LogFn }): Promise<DecoderCapabilities> {
  const caps = await decoderCapabilities();
  if (!caps.ffmpeg) {
    log.warn({ missing: caps.missing }, 'ffmpeg/ffprobe not found: only PCM and float WAV uploads can be decoded; other formats get 400 unsupported_audio_format');
  } else if (caps.missing.length > 0) {
    log.warn({ ffmpeg: caps.version, missing: caps.missing }, `this ffmpeg cannot decode: ${caps.missing.join('; ')}`);
  } else {
    log.info({ ffmpeg: caps.version, resampler: caps.resampler }, 'audio decoding: PCM/float WAV in-process, other formats through ffmpeg');
  }
  if (caps.ffmpeg && caps.resampler !== 'soxr') log.warn('ffmpeg is built without libsoxr: resampling with swresample instead');
  return caps;
}
