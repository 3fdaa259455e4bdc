/**
 * Turns in a stream of 16 kHz audio, with OpenAI's server_vad semantics, on Silero's per-frame speech
 * probabilities. The same detector cuts file uploads into speech regions (src/audio/vad.ts), so a file and a
 * live stream of the same audio get the same speech.
 *
 * - `threshold`: a 32 ms frame whose probability reaches it starts speech. Speech goes on while frames stay at or
 *   above `threshold - 0.15` (hysteresis, as Silero's own VADIterator), so a word that dips a little does not end
 *   the turn.
 * - `prefixPaddingMs`: `speech_started` is placed this long before the first speech frame (never before 0), so
 *   the turn's audio holds the quiet onset of the first word.
 * - `silenceDurationMs`: `speech_stopped` comes once this much audio after the last speech frame has stayed under
 *   `threshold - 0.15`; its sample is where that speech ended, not where the silence was confirmed. A frame at or
 *   above `threshold` within the silence takes it back.
 */
import { SAMPLE_RATE } from './pcm.js';
import { VAD_FRAME_SAMPLES, type VadStream } from './silero-vad.js';

export interface TurnDetectorOptions {
  /** Speech probability (0-1) that starts speech. */
  threshold: number;
  /** Audio kept before the first speech frame (ms). */
  prefixPaddingMs: number;
  /** Non-speech that ends a turn (ms). */
  silenceDurationMs: number;
}

/** OpenAI's server_vad defaults. */
export const DEFAULT_TURN_DETECTION: Readonly<TurnDetectorOptions> = Object.freeze({ threshold: 0.5, prefixPaddingMs: 300, silenceDurationMs: 500 });

/** How far under `threshold` a probability must fall to count as silence (Silero's VADIterator: 0.15). */
const HYSTERESIS = 0.15;

export type SpeechEvent =
  /** 16 kHz sample index in the stream: speech start minus prefix padding (>= 0). */
  | { type: 'speech_started'; sample: number }
  /** Sample index where speech ended (before the silence). */
  | { type: 'speech_stopped'; sample: number };

export function checkTurnDetectorOptions(o: TurnDetectorOptions): void {
  if (!(o.threshold > 0 && o.threshold < 1)) throw new RangeError(`threshold must be in (0, 1), got ${o.threshold}`);
  if (!(o.prefixPaddingMs >= 0 && Number.isFinite(o.prefixPaddingMs))) throw new RangeError(`prefixPaddingMs must be >= 0, got ${o.prefixPaddingMs}`);
  if (!(o.silenceDurationMs >= 0 && Number.isFinite(o.silenceDurationMs))) throw new RangeError(`silenceDurationMs must be >= 0, got ${o.silenceDurationMs}`);
}

export class TurnDetector {
  private readonly negThreshold: number;
  private readonly prefixSamples: number;
  private readonly silenceSamples: number;
  /** Samples of the stream whose frames have been scored. */
  private scored = 0;
  /** Samples of the stream pushed, scored or not. */
  private pushed = 0;
  private speaking = false;
  /** While speaking: where the current run of silence began, or -1. */
  private silenceFrom = -1;

  constructor(
    private readonly vad: VadStream,
    private readonly o: TurnDetectorOptions,
  ) {
    checkTurnDetectorOptions(o);
    this.negThreshold = Math.max(0, o.threshold - HYSTERESIS);
    this.prefixSamples = Math.round((o.prefixPaddingMs * SAMPLE_RATE) / 1000);
    this.silenceSamples = Math.round((o.silenceDurationMs * SAMPLE_RATE) / 1000);
  }

  /** True between a speech_started and its speech_stopped. */
  get inSpeech(): boolean {
    return this.speaking;
  }

  /** The events decided by the frames this audio completes, in order. Calls must not overlap (await each). */
  async push(pcm16k: Float32Array): Promise<SpeechEvent[]> {
    const events: SpeechEvent[] = [];
    this.pushed += pcm16k.length;
    for (const p of await this.vad.push(pcm16k)) {
      const start = this.scored;
      const end = (this.scored += VAD_FRAME_SAMPLES);
      if (!this.speaking) {
        if (p >= this.o.threshold) {
          this.speaking = true;
          this.silenceFrom = -1;
          events.push({ type: 'speech_started', sample: Math.max(0, start - this.prefixSamples) });
        }
        continue;
      }
      if (p >= this.o.threshold) this.silenceFrom = -1;
      else if (p < this.negThreshold && this.silenceFrom < 0) this.silenceFrom = start;
      if (this.silenceFrom >= 0 && end - this.silenceFrom >= this.silenceSamples) {
        this.speaking = false;
        events.push({ type: 'speech_stopped', sample: this.silenceFrom });
        this.silenceFrom = -1;
      }
    }
    return events;
  }

  /** Done: the VAD stream is closed (after a push still running). */
  close(): void {
    this.vad.close();
  }

  /**
   * After a push that failed (the VAD's state was lost, its audio unscored): scoring starts afresh with the next
   * sample, which keeps its place in the stream, and a turn in progress goes on, so silence after it still ends it.
   */
  skipUnscored(): void {
    this.vad.reset();
    this.scored = this.pushed;
  }

  /** A new stream: sample 0 is the next sample pushed. */
  reset(): void {
    this.vad.reset();
    this.scored = 0;
    this.pushed = 0;
    this.speaking = false;
    this.silenceFrom = -1;
  }
}
