/**
 * Speech regions and segment planning for file transcription, on 16 kHz mono PCM.
 *
 * `detectSpeech` runs the file through the same turn detector as a live stream (src/audio/turn-detector.ts:
 * Silero VAD v6, OpenAI's server_vad semantics), so a file and a live stream of the same audio get the same
 * speech. Each turn is one region, from its speech_started sample (the onset minus the prefix padding) to its
 * speech_stopped sample (where speech ended) plus the same padding, so a fading last word is kept whole as the
 * first one is (a live turn's audio runs on past speech_stopped too, to where the silence was confirmed). A turn
 * still open at the end of the file ends there. Regions that touch are merged.
 *
 * `planSegments` turns regions into what the model transcribes one by one: regions closer than a
 * gap are grouped, and a group longer than `maxSeconds` is cut where the audio is quietest (a
 * dynamic programme over 10 ms points that minimises the loudness at the cuts, pauses between
 * regions being free), so segments follow pauses rather than a fixed grid.
 */

import { SAMPLE_RATE } from './pcm.js';
import { VAD_FRAME_SAMPLES, type SileroVad } from './silero-vad.js';
import { DEFAULT_TURN_DETECTION, TurnDetector, type SpeechEvent, type TurnDetectorOptions } from './turn-detector.js';

/** Runs one piece of work (`score`) when the caller's thread can give it a turn of its own. */
export type PieceRunner = <T>(score: () => Promise<T>) => Promise<T>;

/** Seconds in the input's time line. */
export interface SpeechRegion {
  start: number;
  end: number;
}

/**
 * Audio handed to the detector at a time: bounds the probabilities held at once for hours of audio, how long a stop
 * request waits, and how long a piece run between an ASR worker's decode steps holds them up (5 s of audio is
 * ~25-35 ms of CPU).
 */
const PIECE_SAMPLES = 5 * SAMPLE_RATE;

/**
 * Speech regions of 16 kHz mono PCM, sorted and disjoint, in seconds within [0, duration]. The parameters are the
 * live turns' (DEFAULT_TURN_DETECTION: threshold 0.5, 300 ms before the onset, a turn ends after 500 ms of
 * silence); the model's `vad` may serve other streams of the thread at the same time. Once `shouldStop` says so
 * (asked before each 5 s of audio) it returns the regions found so far.
 *
 * `runPiece` runs the scoring of each 5 s piece. Every frame's model run yields to the event loop once, so on a
 * thread that also runs other model work (an ASR worker's decode steps) the frames would get one turn each between
 * that work; such a caller passes a runner that scores a piece between two of its own runs, in one go.
 */
export async function detectSpeech(
  pcm: Float32Array,
  vad: SileroVad,
  options: TurnDetectorOptions = DEFAULT_TURN_DETECTION,
  shouldStop?: () => boolean,
  runPiece: PieceRunner = (score) => score(),
): Promise<SpeechRegion[]> {
  const turns = new TurnDetector(vad.stream(), options);
  const duration = pcm.length / SAMPLE_RATE;
  const padding = options.prefixPaddingMs / 1000;
  const regions: SpeechRegion[] = [];
  let start = -1;
  const take = (events: SpeechEvent[]) => {
    for (const e of events) {
      if (e.type === 'speech_stopped') {
        regions.push({ start, end: Math.min(duration, e.sample / SAMPLE_RATE + padding) });
        start = -1;
        continue;
      }
      start = e.sample / SAMPLE_RATE;
      const prev = regions[regions.length - 1];
      if (prev && start <= prev.end) {
        start = prev.start;
        regions.pop();
      }
    }
  };
  let at = 0;
  for (; at < pcm.length; at += PIECE_SAMPLES) {
    const piece = pcm.subarray(at, at + PIECE_SAMPLES);
    // The last partial frame, completed with silence, is scored too.
    const rest = at + PIECE_SAMPLES >= pcm.length ? pcm.length % VAD_FRAME_SAMPLES : 0;
    const events = await runPiece(async () => {
      // asked when the piece has its turn, so one stopped while it waited is not scored
      if (shouldStop?.()) return undefined;
      const found = await turns.push(piece);
      return rest ? [...found, ...(await turns.push(new Float32Array(VAD_FRAME_SAMPLES - rest)))] : found;
    });
    if (!events) break;
    take(events);
  }
  const end = Math.min(at, pcm.length) / SAMPLE_RATE;
  if (start >= 0 && start < end) regions.push({ start, end });
  return regions;
}

/** What the model transcribes, one by one: seconds in the input's time line. */
export interface PlannedSegment {
  start: number;
  end: number;
}

export interface PlanOptions {
  /** Longest segment (s), padding included. */
  maxSeconds: number;
  /** Regions closer than this (s) may share a segment, when it still fits maxSeconds (default 1). */
  mergeGapSeconds?: number;
  /** Added before and after each segment (s), within the audio and never over a neighbour (default 0.1). */
  paddingSeconds?: number;
}

/** Cut candidates every 10 ms. */
const CUT_STEP_SECONDS = 0.01;
/**
 * Loudness at a cut: mean square over 100 ms around it (+-5 steps), plus a quarter of that over
 * 400 ms (+-20 steps), so that of two silent pauses the longer one, and its middle, wins.
 */
const CUT_SHORT_HALF = 5;
const CUT_LONG_HALF = 20;
const CUT_LONG_WEIGHT = 0.25;
/** Price of one cut relative to the speech's mean square (-25 dB): fewer, longer segments unless a cut saves more loudness. */
const CUT_PRICE = 0.003;

/**
 * Regions -> segments of at most maxSeconds. Regions within mergeGapSeconds of each other form a
 * group; a group that fits is one segment; a longer one is cut by a dynamic programme over 10 ms
 * points that minimises the summed loudness at the cuts plus a price per cut, with every piece at
 * most maxSeconds: cuts land in pauses between regions (free) or at the quietest, longest pauses
 * inside speech. Pieces are trimmed to the speech they hold, then padded. Segments come sorted and
 * disjoint, within [0, duration].
 */
export function planSegments(pcm: Float32Array, regions: SpeechRegion[], options: PlanOptions): PlannedSegment[] {
  const { maxSeconds, mergeGapSeconds = 1, paddingSeconds = 0.1 } = options;
  if (!(Number.isFinite(maxSeconds) && maxSeconds >= CUT_STEP_SECONDS)) throw new RangeError(`maxSeconds must be at least ${CUT_STEP_SECONDS} s, got ${maxSeconds}`);
  if (!(mergeGapSeconds >= 0) || !(paddingSeconds >= 0)) throw new RangeError('mergeGapSeconds and paddingSeconds must be >= 0');
  const duration = pcm.length / SAMPLE_RATE;
  const speech = normaliseRegions(regions, duration);
  const pieces: PlannedSegment[] = [];
  let first = 0;
  while (first < speech.length) {
    let last = first;
    while (last + 1 < speech.length && speech[last + 1]!.start - speech[last]!.end < mergeGapSeconds) last++;
    const group = speech.slice(first, last + 1);
    const start = group[0]!.start;
    const end = group[group.length - 1]!.end;
    if (end - start <= maxSeconds) pieces.push({ start, end });
    else for (const piece of cutGroup(pcm, group, maxSeconds)) pieces.push(piece);
    first = last + 1;
  }
  return pad(pieces, paddingSeconds, maxSeconds, duration);
}

/** Finite regions clipped to [0, duration], sorted, overlaps merged, empty ones dropped. */
function normaliseRegions(regions: SpeechRegion[], duration: number): SpeechRegion[] {
  const clipped = regions
    .map((r) => ({ start: Math.max(0, r.start), end: Math.min(duration, r.end) }))
    .filter((r) => Number.isFinite(r.start) && Number.isFinite(r.end) && r.end > r.start)
    .sort((a, b) => a.start - b.start);
  const out: SpeechRegion[] = [];
  for (const r of clipped) {
    const prev = out[out.length - 1];
    if (prev && r.start <= prev.end) prev.end = Math.max(prev.end, r.end);
    else out.push(r);
  }
  return out;
}

/** Splits a group longer than maxSeconds at its cheapest cuts (see planSegments). */
function cutGroup(pcm: Float32Array, group: SpeechRegion[], maxSeconds: number): PlannedSegment[] {
  const start = group[0]!.start;
  const end = group[group.length - 1]!.end;
  const step = Math.round(CUT_STEP_SECONDS * SAMPLE_RATE);
  const points = Math.ceil((end - start) / CUT_STEP_SECONDS - 1e-9);
  const maxSteps = Math.floor(maxSeconds / CUT_STEP_SECONDS + 1e-9);
  const timeOf = (j: number) => Math.min(end, start + j * CUT_STEP_SECONDS);

  // Energy of each 10 ms step around the group (margins for the loudness windows), prefix-summed.
  const origin = Math.round(start * SAMPLE_RATE) - CUT_LONG_HALF * step;
  const steps = points + 2 * CUT_LONG_HALF;
  const prefix = new Float64Array(steps + 1);
  for (let i = 0; i < steps; i++) {
    let e = 0;
    const from = Math.max(0, origin + i * step);
    const to = Math.min(pcm.length, origin + (i + 1) * step);
    for (let t = from; t < to; t++) e += pcm[t]! * pcm[t]!;
    prefix[i + 1] = prefix[i]! + e;
  }
  const samplesIn = (lo: number, hi: number) => Math.max(1, Math.min(pcm.length, origin + hi * step) - Math.max(0, origin + lo * step));
  const meanSquare = (j: number, halfWidth: number) => {
    const lo = CUT_LONG_HALF + j - halfWidth;
    const hi = CUT_LONG_HALF + j + halfWidth;
    return (prefix[hi]! - prefix[lo]!) / samplesIn(lo, hi);
  };

  // Reference loudness: the group's speech.
  let speechEnergy = 0;
  let speechSamples = 0;
  for (const r of group) {
    const from = Math.round(r.start * SAMPLE_RATE);
    const to = Math.min(pcm.length, Math.round(r.end * SAMPLE_RATE));
    for (let t = from; t < to; t++) speechEnergy += pcm[t]! * pcm[t]!;
    speechSamples += Math.max(0, to - from);
  }
  const reference = Math.max(speechEnergy / Math.max(1, speechSamples), 1e-12);

  // best[j]: least cost of pieces covering [start, t_j] with a cut at j; the window minimum over
  // the previous maxSteps points is kept in a monotonic deque, so the programme is linear.
  const best = new Float64Array(points + 1);
  const back = new Int32Array(points + 1);
  const deque = new Int32Array(points + 1);
  let head = 0;
  let tail = 0;
  deque[tail++] = 0;
  let region = 0;
  for (let j = 1; j <= points; j++) {
    while (deque[head]! < j - maxSteps) head++;
    const i = deque[head]!;
    let cost = 0;
    if (j < points) {
      const t = timeOf(j);
      while (region < group.length && group[region]!.end <= t) region++;
      const inSpeech = region < group.length && group[region]!.start < t;
      cost = CUT_PRICE + (inSpeech ? (meanSquare(j, CUT_SHORT_HALF) + CUT_LONG_WEIGHT * meanSquare(j, CUT_LONG_HALF)) / reference : 0);
    }
    best[j] = best[i]! + cost;
    back[j] = i;
    while (tail > head && best[deque[tail - 1]!]! > best[j]!) tail--;
    deque[tail++] = j;
  }
  const cuts: number[] = [];
  for (let j = back[points]!; j > 0; j = back[j]!) cuts.push(timeOf(j));
  cuts.reverse();

  // Each piece shrinks to the speech inside it: a cut in a pause leaves the pause out.
  const out: PlannedSegment[] = [];
  const bounds = [start, ...cuts, end];
  let r = 0;
  for (let p = 0; p + 1 < bounds.length; p++) {
    const lo = bounds[p]!;
    const hi = bounds[p + 1]!;
    while (r < group.length && group[r]!.end <= lo) r++;
    let s = Infinity;
    let e = -Infinity;
    for (let q = r; q < group.length && group[q]!.start < hi; q++) {
      s = Math.min(s, Math.max(lo, group[q]!.start));
      e = Math.max(e, Math.min(hi, group[q]!.end));
    }
    if (e > s) out.push({ start: s, end: e });
  }
  return out;
}

/** Pads each segment by up to `padding` a side: within [0, duration], at most half-way to a neighbour, never past maxSeconds. */
function pad(segments: PlannedSegment[], padding: number, maxSeconds: number, duration: number): PlannedSegment[] {
  return segments.map((seg, i) => {
    const prev = segments[i - 1];
    const next = segments[i + 1];
    let before = Math.min(padding, prev ? (seg.start - prev.end) / 2 : seg.start);
    let after = Math.min(padding, next ? (next.start - seg.end) / 2 : duration - seg.end);
    const slack = Math.max(0, maxSeconds - (seg.end - seg.start));
    if (before + after > slack) {
      const scale = slack / (before + after);
      before *= scale;
      after *= scale;
    }
    const start = seg.start - before;
    const end = seg.end + after;
    // Times are sums of floats: keep the length within the limit despite rounding.
    return { start, end: end - start > maxSeconds ? start + maxSeconds - 1e-9 : end };
  });
}
