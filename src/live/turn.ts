import { randomBytes } from 'node:crypto';
import { SAMPLE_RATE } from '../audio/pcm.js';
import type { TranscribeCall } from '../pool/pool.js';
import type { Transcription } from '../pool/result.js';
import { LocalAgreement, RepetitionGuard, textUnits } from './agreement.js';
import { TranscribeRefused, type LiveConfig, type LiveEvent, type TurnTranscribe } from './types.js';

/** What a turn needs from its session. */
export interface TurnHost {
  transcribe: TurnTranscribe;
  emit(event: LiveEvent): void;
  /** the session's configuration now (language and context apply from the next transcription) */
  config(): Pick<LiveConfig, 'language' | 'context'>;
  /** aborted when the session closes */
  closing: AbortSignal;
}

/** A wait before asking a full pool again for a turn's final. */
const FINAL_RETRY_MS = 200;

function newItemId(): string {
  return `item_${randomBytes(12).toString('base64url')}`;
}

/**
 * One turn of speech: its partial hypotheses, the stable text emitted from them, and its final transcription.
 * The audio belongs to the session; the turn is given a copy each time it transcribes.
 */
export class LiveTurn {
  readonly itemId = newItemId();
  /** the emitted text; every later transcription of this turn is forced to start with it */
  private text = '';
  private readonly agreement = new LocalAgreement<number>();
  private readonly guard = new RepetitionGuard();
  /** the language of the emitted text, as the transcription that began it named it (forced or heard) */
  private language: string | undefined;
  /** turn length in samples when the last partial started */
  private partialAt = 0;

  constructor(
    private readonly host: TurnHost,
    /** stream sample index where the turn's audio starts */
    readonly start: number,
  ) {}

  /** A partial is due once `partialSamples` of audio arrived since the last one started. */
  partialDue(length: number, partialSamples: number): boolean {
    return length - this.partialAt >= partialSamples;
  }

  /**
   * Re-transcribes the turn so far (`pcm`, whose last sample arrived at `arrival`) and emits what became
   * stable. Resolves when done; refusals and failures only skip this partial (and say which it was).
   */
  async partial(pcm: Float32Array, arrival: number, signal: AbortSignal): Promise<'ran' | 'refused' | 'failed'> {
    this.partialAt = pcm.length;
    let result: Transcription;
    try {
      result = await this.host.transcribe(pcm, this.call(signal));
    } catch (err) {
      if (err instanceof TranscribeRefused) return 'refused';
      return signal.aborted ? 'ran' : 'failed';
    }
    if (signal.aborted || result.cancelled || !result.text.startsWith(this.text)) return 'ran';
    // Until text is emitted the session's language may still change; after, later transcriptions continue it.
    if (!this.text) this.language = result.languages[0] || undefined;
    const { stable, mark } = this.agreement.accept(textUnits(result.text.slice(this.text.length)), arrival);
    this.agreement.emitted(stable.length);
    // Without a language the text could not be forced as the next prefix: nothing is emitted yet.
    const kept = this.language === undefined ? [] : this.guard.admit(stable);
    if (kept.length > 0) this.say(kept.join(''), mark === undefined ? undefined : performance.now() - mark);
    return 'ran';
  }

  /**
   * The final transcription of the turn's audio, forced to continue the emitted text: emits its tail as the
   * last delta, then `completed` (or `failed`). `endArrival`: when the turn's last sample (or its commit)
   * arrived. Retries while the pool is full; gives up when it is shutting down or the session closes.
   */
  async finish(pcm: Float32Array, endArrival: number, signal: AbortSignal): Promise<void> {
    let result: Transcription | undefined;
    while (!signal.aborted) {
      try {
        result = await this.host.transcribe(pcm.slice(), this.call(signal));
        break;
      } catch (err) {
        if (err instanceof TranscribeRefused && err.reason !== 'draining') {
          await sleep(FINAL_RETRY_MS, signal);
          continue;
        }
        return this.fail(err instanceof Error ? err.message : String(err));
      }
    }
    if (signal.aborted || !result) return;
    if (result.cancelled) return this.fail(`the transcription was cancelled (${result.cancelReason ?? 'client'})`);
    // The engine guarantees the forced prefix; a result without it has nothing that can follow the deltas.
    const tail = result.text.startsWith(this.text) ? result.text.slice(this.text.length) : '';
    const kept = this.guard.admit(textUnits(tail));
    if (kept.length > 0) this.say(kept.join(''));
    const language = this.language ?? (result.languages[0] || undefined);
    this.host.emit({
      type: 'completed',
      itemId: this.itemId,
      transcript: this.text,
      ...(language ? { language } : {}),
      audioSeconds: pcm.length / SAMPLE_RATE,
      usage: { inputTokens: result.usage.promptTokens, audioTokens: result.usage.audioTokens, outputTokens: result.usage.generatedTokens },
      finalLatencyMs: performance.now() - endArrival,
    });
  }

  private say(text: string, latencyMs?: number): void {
    this.text += text;
    this.host.emit({ type: 'delta', itemId: this.itemId, text, ...(latencyMs === undefined ? {} : { latencyMs }) });
  }

  private fail(message: string): void {
    if (!this.host.closing.aborted) this.host.emit({ type: 'failed', itemId: this.itemId, message });
  }

  private call(signal: AbortSignal): TranscribeCall {
    const { language, context } = this.host.config();
    // Once text is forced, its language is the turn's: a language the session switched to meanwhile would
    // contradict the prefix (the engine refuses that), so it applies from the next turn.
    const prefix = this.text && this.language ? { language: this.language, text: this.text } : undefined;
    return {
      whole: true,
      signal,
      ...(prefix ? { prefix } : language ? { language } : {}),
      ...(context ? { context } : {}),
    };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
