import { SAMPLE_RATE } from './pcm.js';

/** One piece of a long recording, with where it sits in the original time line. */
export interface AudioChunk {
  pcm: Float32Array;
  /** seconds from the start of the recording */
  start: number;
  end: number;
}

const MIN_CHUNK_SAMPLES = SAMPLE_RATE / 2;

/**
 * qwen-asr's split_audio_into_chunks: while the rest is longer than the limit, cut at the quietest
 * point within +-searchExpand seconds of it: the 100 ms window with the least sum of |x|, and inside it
 * the sample with the least |x|. Chunks are contiguous (no overlap, no gap); chunks under 0.5 s are
 * zero-padded at the tail for the model, while `end` keeps the real length.
 */
export function splitAudioIntoChunks(
  wav: Float32Array,
  maxChunkSeconds: number,
  searchExpandSeconds = 5,
  minWindowMs = 100,
  sampleRate = SAMPLE_RATE,
): AudioChunk[] {
  const total = wav.length;
  const pieces: [number, number][] = [];
  if (total / sampleRate <= maxChunkSeconds) {
    pieces.push([0, total]);
  } else {
    const maxLength = Math.floor(maxChunkSeconds * sampleRate);
    const expand = Math.floor(searchExpandSeconds * sampleRate);
    const window = Math.max(4, Math.floor((minWindowMs / 1000) * sampleRate));
    let start = 0;
    while (total - start > maxLength) {
      const cut = start + maxLength;
      const left = Math.max(start, cut - expand);
      const right = Math.min(total, cut + expand);
      let boundary = cut;
      if (right - left > window) boundary = left + quietestPoint(wav, left, right, window);
      boundary = Math.min(Math.max(boundary, start + 1), total);
      pieces.push([start, boundary]);
      start = boundary;
    }
    pieces.push([start, total]);
  }
  return pieces.map(([from, to]) => {
    let pcm = wav.subarray(from, to);
    if (pcm.length < MIN_CHUNK_SAMPLES) {
      const padded = new Float32Array(MIN_CHUNK_SAMPLES);
      padded.set(pcm);
      pcm = padded;
    }
    return { pcm, start: from / sampleRate, end: to / sampleRate };
  });
}

/** Offset (from `left`) of the least-|x| sample inside the window of least summed |x| (first minimum wins, as numpy's argmin). */
function quietestPoint(wav: Float32Array, left: number, right: number, window: number): number {
  let sum = 0;
  for (let i = left; i < left + window; i++) sum += Math.abs(wav[i]!);
  let best = sum;
  let bestStart = 0;
  for (let s = 1; s + window <= right - left; s++) {
    sum += Math.abs(wav[left + s + window - 1]!) - Math.abs(wav[left + s - 1]!);
    if (sum < best) {
      best = sum;
      bestStart = s;
    }
  }
  let inner = 0;
  for (let i = 1; i < window; i++) if (Math.abs(wav[left + bestStart + i]!) < Math.abs(wav[left + bestStart + inner]!)) inner = i;
  return bestStart + inner;
}
