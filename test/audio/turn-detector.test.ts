import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm, SAMPLE_RATE as SR } from '../../src/audio/pcm.js';
import { SileroVad, VAD_FRAME_SAMPLES, type VadStream } from '../../src/audio/silero-vad.js';
import { DEFAULT_TURN_DETECTION, TurnDetector, type SpeechEvent, type TurnDetectorOptions } from '../../src/audio/turn-detector.js';
import { sharedPath } from '../support/shared.js';
import { concat, music, noise, silence, tone } from '../support/speech-mix.js';

const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));

/** An event and the samples pushed when it came. */
type Heard = SpeechEvent & { at: number };

/** Feeds `pcm` as a live client would, 20 ms at a time. */
async function live(detector: TurnDetector, pcm: Float32Array, piece = 320): Promise<Heard[]> {
  const heard: Heard[] = [];
  for (let at = 0; at < pcm.length; at += piece) {
    for (const e of await detector.push(pcm.subarray(at, at + piece))) heard.push({ ...e, at: Math.min(pcm.length, at + piece) });
  }
  return heard;
}

/** A VadStream that plays back given probabilities, one per 512 samples: the detector's rules, exactly. */
function scripted(probs: number[]): VadStream {
  let frame = 0;
  let pending = 0;
  return {
    push: (pcm) => {
      pending += pcm.length;
      const n = Math.floor(pending / VAD_FRAME_SAMPLES);
      pending -= n * VAD_FRAME_SAMPLES;
      const out = Float32Array.from(probs.slice(frame, frame + n));
      frame += n;
      return Promise.resolve(out);
    },
    reset: () => {
      frame = 0;
      pending = 0;
    },
    close: () => {},
  };
}

const F = VAD_FRAME_SAMPLES;
const frames = (n: number) => new Float32Array(n * F);

describe('TurnDetector: OpenAI server_vad rules', () => {
  const o: TurnDetectorOptions = { threshold: 0.5, prefixPaddingMs: 64, silenceDurationMs: 160 }; // 2 frames, 5 frames

  it('starts at the first frame over the threshold minus the padding, and stops where speech ended once the silence lasts', async () => {
    //              0    1    2    3    4    5    6    7    8    9    10   11   12
    const probs = [0.1, 0.1, 0.2, 0.6, 0.9, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
    const d = new TurnDetector(scripted(probs), o);
    expect(await d.push(frames(3))).toEqual([]);
    expect(await d.push(frames(1))).toEqual([{ type: 'speech_started', sample: 1 * F }]);
    expect(d.inSpeech).toBe(true);
    // silence from frame 6; five frames of it are complete at the end of frame 10
    expect(await d.push(frames(6))).toEqual([]);
    expect(await d.push(frames(1))).toEqual([{ type: 'speech_stopped', sample: 6 * F }]);
    expect(d.inSpeech).toBe(false);
  });

  it('clamps the padding at the stream start', async () => {
    const d = new TurnDetector(scripted([0.9]), o);
    expect(await d.push(frames(1))).toEqual([{ type: 'speech_started', sample: 0 }]);
  });

  it('keeps speech through dips above threshold - 0.15, and a frame over the threshold takes back a silence', async () => {
    const probs = [0.9, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.2, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2, 0.36];
    const d = new TurnDetector(scripted(probs), o);
    const events = await d.push(frames(probs.length));
    // 0.4 >= 0.35 is still speech; four frames of 0.2 are not yet 160 ms; 0.6 resets; five of 0.2 end it at frame 12
    expect(events).toEqual([
      { type: 'speech_started', sample: 0 },
      { type: 'speech_stopped', sample: 12 * F },
    ]);
  });

  it('counts a silence from its first frame under threshold - 0.15, through frames between the two thresholds', async () => {
    const probs = [0.9, 0.2, 0.4, 0.4, 0.4, 0.4];
    const events = await new TurnDetector(scripted(probs), o).push(frames(probs.length));
    expect(events).toEqual([
      { type: 'speech_started', sample: 0 },
      { type: 'speech_stopped', sample: 1 * F },
    ]);
  });

  it('starts over on reset', async () => {
    const d = new TurnDetector(scripted([0.1, 0.9]), o);
    expect(await d.push(frames(2))).toEqual([{ type: 'speech_started', sample: 0 }]);
    d.reset();
    expect(d.inSpeech).toBe(false);
    expect(await d.push(frames(2))).toEqual([{ type: 'speech_started', sample: 0 }]);
  });

  it('refuses options out of range', () => {
    const s = scripted([]);
    expect(() => new TurnDetector(s, { ...o, threshold: 1.5 })).toThrow(RangeError);
    expect(() => new TurnDetector(s, { ...o, threshold: Number.NaN })).toThrow(RangeError);
    expect(() => new TurnDetector(s, { ...o, prefixPaddingMs: -1 })).toThrow(RangeError);
    expect(() => new TurnDetector(s, { ...o, silenceDurationMs: Number.POSITIVE_INFINITY })).toThrow(RangeError);
    expect(DEFAULT_TURN_DETECTION).toEqual({ threshold: 0.5, prefixPaddingMs: 300, silenceDurationMs: 500 });
  });
});

describe('TurnDetector on Silero VAD', () => {
  let vad: SileroVad;
  beforeAll(async () => {
    vad = await SileroVad.load();
  });
  afterAll(() => vad.release());

  it('finds two turns in two real clips 2 s apart, fed live, with speech_started and speech_stopped in order', async () => {
    const a = clip('far_field');
    const b = clip('mixed');
    const pcm = concat(silence(1), a, silence(2), b, silence(2));
    const aEnd = 1 + a.length / SR;
    const bStart = aEnd + 2;
    const bEnd = bStart + b.length / SR;
    const heard = await live(new TurnDetector(vad.stream(), DEFAULT_TURN_DETECTION), pcm);
    expect(heard.map((e) => e.type)).toEqual(['speech_started', 'speech_stopped', 'speech_started', 'speech_stopped']);
    const [s1, e1, s2, e2] = heard.map((e) => ({ ...e, t: e.sample / SR, heardAt: e.at / SR }));
    // far_field.wav speaks from its start: the turn opens within 0.5 s of it, padded by 300 ms
    expect(s1!.t).toBeGreaterThanOrEqual(1 - 0.3);
    expect(s1!.t).toBeLessThan(1 + 0.5 - 0.3);
    expect(e1!.t).toBeGreaterThan(s1!.t + 3);
    expect(e1!.t).toBeLessThanOrEqual(aEnd);
    expect(s2!.t).toBeGreaterThanOrEqual(bStart - 0.3);
    expect(s2!.t).toBeLessThan(bStart + 0.5);
    expect(e2!.t).toBeGreaterThan(s2!.t + 3);
    expect(e2!.t).toBeLessThanOrEqual(bEnd);
    // a start is heard at once (within two 32 ms frames of its onset, plus the 20 ms piece); a stop only once
    // 500 ms of silence has passed after it
    for (const s of [s1!, s2!]) expect(s.heardAt - (s.t + 0.3)).toBeLessThanOrEqual(0.064 + 0.02 + 0.032);
    for (const e of [e1!, e2!]) {
      expect(e.heardAt - e.t).toBeGreaterThanOrEqual(0.5);
      expect(e.heardAt - e.t).toBeLessThanOrEqual(0.5 + 0.032 + 0.02);
    }
  });

  it('hears no turn in silence, noise, hum, tones or music', async () => {
    const quiet: [string, Float32Array][] = [
      ['silence', silence(4)],
      ['white noise', noise('white', 4, 0.1, 1)],
      ['pink noise', noise('pink', 4, 0.3, 2)],
      ['brown noise', noise('brown', 4, 0.3, 3)],
      ['hum', tone(4, [50, 100, 150, 200, 250], 0.3)],
      ['buzz', tone(4, [150, 300, 450, 600, 750, 900, 1050], 0.2)],
      ['music', music(4, 0.2, 4)],
    ];
    for (const [name, pcm] of quiet) {
      expect(await live(new TurnDetector(vad.stream(), DEFAULT_TURN_DETECTION), pcm), name).toEqual([]);
    }
  });
});
