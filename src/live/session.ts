import { SAMPLE_RATE } from '../audio/pcm.js';
import { checkTurnDetectorOptions, DEFAULT_TURN_DETECTION, TurnDetector, type SpeechEvent } from '../audio/turn-detector.js';
import { InputAudio } from './input-audio.js';
import { StreamBuffer } from './stream-buffer.js';
import { LiveTurn, type TurnHost } from './turn.js';
import {
  LiveError,
  type CommitReason,
  type LiveConfig,
  type LiveEvent,
  type LiveListener,
  type LiveSessionOptions,
  type LiveStats,
} from './types.js';

const DEFAULT_PARTIAL_SECONDS = 0.8;
export const DEFAULT_MAX_TURN_SECONDS = 28;
const DEFAULT_MAX_BACKLOG_SECONDS = 10;
/** OpenAI refuses to commit less: "buffer too small. Expected at least 100ms of audio". */
const MIN_COMMIT_MS = 100;
/** Audio kept before a turn with server turn detection: speech is detected some frames after it starts. */
const HISTORY_SECONDS = 2;

const ms = (samples: number) => Math.round((samples * 1000) / SAMPLE_RATE);
/** OpenAI's words for a commit of too little audio. */
const tooSmall = (samples: number) =>
  `buffer too small. Expected at least ${MIN_COMMIT_MS}ms of audio, but buffer only has ${(samples / (SAMPLE_RATE / 1000)).toFixed(2)}ms of audio.`;
const samples = (seconds: number) => Math.round(seconds * SAMPLE_RATE);

/**
 * A live transcription session, free of any wire protocol. Audio arrives in the client's format and pieces;
 * turns end by server turn detection, a client commit, or the maximum turn length. While a turn grows it is
 * re-transcribed every `partialSeconds` of new audio (one partial at a time per session, never queued), and
 * text that two consecutive partials agree on is emitted as deltas, never retracted; the final transcription
 * continues that text. Audio and commands are processed in order through one queue, since turn detection is
 * asynchronous; the methods check what they can at once and throw LiveError.
 */
export class LiveSession {
  private config: LiveConfig;
  private input: InputAudio;
  private readonly buffer = new StreamBuffer();
  private detector: TurnDetector | undefined;
  /** stream index of the detector's sample 0 */
  private detectorOffset = 0;
  private turn: LiveTurn | undefined;
  /** stream index where audio not yet committed (or cleared) starts */
  private uncommittedFrom = 0;
  /** stream index the client has sent up to (ahead of the buffer while the queue works) */
  private appendedEnd = 0;
  /** samples the client sent since its last commit or clear (known before the queue gets to them) */
  private appendedSinceClient = 0;
  /** when the newest sample in the buffer arrived (performance.now()) */
  private lastArrival = 0;
  private previousItemId: string | null = null;
  private partial: { turn: LiveTurn; abort: AbortController; run: Promise<void> } | undefined;
  private readonly finals = new Set<Promise<void>>();
  private readonly closer = new AbortController();
  private queue: Promise<void> = Promise.resolve();
  /** samples appended but not yet through turn detection */
  private backlog = 0;
  private readonly maxTurnSamples: number;
  private readonly maxBacklogSamples: number;
  private readonly host: TurnHost;
  readonly stats: LiveStats = { turns: 0, partials: 0, partialsRefused: 0, partialsFailed: 0, droppedSeconds: 0 };

  constructor(
    private readonly o: LiveSessionOptions,
    private readonly listener: LiveListener,
  ) {
    const config: LiveConfig = {
      format: { encoding: 'pcm16', sampleRate: 24000 },
      turnDetection: o.vadStream ? { ...DEFAULT_TURN_DETECTION } : null,
      partialSeconds: o.partialSeconds ?? DEFAULT_PARTIAL_SECONDS,
      ...o.config,
    };
    this.check(config);
    this.config = config;
    this.input = new InputAudio(config.format);
    this.setDetector(config.turnDetection);
    this.maxTurnSamples = samples(o.maxTurnSeconds ?? DEFAULT_MAX_TURN_SECONDS);
    this.maxBacklogSamples = samples(o.maxBacklogSeconds ?? DEFAULT_MAX_BACKLOG_SECONDS);
    this.host = {
      transcribe: o.transcribe,
      emit: (e) => this.emit(e),
      config: () => this.config,
      closing: this.closer.signal,
    };
  }

  get isClosed(): boolean {
    return this.closer.signal.aborted;
  }

  /** Audio bytes in the configured format, any size. Dropped (and counted) when closed or too far behind. */
  append(bytes: Uint8Array): void {
    const arrival = performance.now();
    const pcm = this.input.push(bytes);
    if (this.isClosed || this.backlog + pcm.length > this.maxBacklogSamples) {
      this.stats.droppedSeconds += pcm.length / SAMPLE_RATE;
      return;
    }
    this.backlog += pcm.length;
    this.appendedEnd += pcm.length;
    this.appendedSinceClient += pcm.length;
    this.enqueue(async () => {
      this.backlog -= pcm.length;
      await this.ingest(pcm, arrival);
    });
  }

  /** Ends the current turn here (or makes one of the uncommitted audio). Throws LiveError 'buffer_too_small'. */
  commit(): void {
    this.open();
    const have = Math.min(this.appendedSinceClient, this.appendedEnd - Math.max(this.uncommittedFrom, this.turn?.start ?? 0));
    if (ms(have) < MIN_COMMIT_MS) throw new LiveError('buffer_too_small', tooSmall(have));
    const at = performance.now();
    this.appendedSinceClient = 0;
    this.enqueue(() => {
      const end = this.buffer.end;
      const start = this.turn?.start ?? Math.max(this.uncommittedFrom, this.buffer.start);
      // The server may have ended the turn itself meanwhile: then there is too little left, as OpenAI says.
      if (ms(end - start) < MIN_COMMIT_MS) return this.emit({ type: 'error', code: 'buffer_too_small', message: tooSmall(end - start) });
      this.turn ??= new LiveTurn(this.host, start);
      this.endTurn(end, 'client', at);
      this.restartDetector();
    });
  }

  /** Drops the uncommitted audio, and the turn it held (no final for it). */
  clear(): void {
    this.open();
    this.appendedSinceClient = 0;
    this.enqueue(() => {
      const dropped = this.turn;
      this.turn = undefined;
      if (dropped) this.abortPartial(dropped);
      this.uncommittedFrom = this.buffer.end;
      this.restartDetector();
      this.emit({ type: 'cleared', ...(dropped ? { itemId: dropped.itemId } : {}) });
    });
  }

  /**
   * Changes the configuration: format at once (for the next append), language, context and cadence from the
   * next transcription, turn detection after the audio already appended. Throws LiveError on a bad value.
   */
  configure(patch: Partial<LiveConfig>): void {
    this.open();
    const next: LiveConfig = { ...this.config, ...patch };
    this.check(next);
    const { format, turnDetection } = this.config;
    this.config = next;
    if (next.format.encoding !== format.encoding || next.format.sampleRate !== format.sampleRate) this.input = new InputAudio(next.format);
    if (JSON.stringify(next.turnDetection) !== JSON.stringify(turnDetection)) {
      this.enqueue(() => this.setDetector(next.turnDetection));
    }
  }

  /**
   * Ends the session at once: every transcription in flight is cancelled, queued audio dropped, no further
   * events. Resolves when the cancelled transcriptions have settled in the pool.
   */
  close(): Promise<void> {
    if (!this.isClosed) {
      this.closer.abort();
      this.partial?.abort.abort();
      // Closed, not reset: a push may still be running on it.
      this.detector?.close();
      this.detector = undefined;
      this.turn = undefined;
    }
    return this.settled();
  }

  /** Resolves once the audio and commands given so far have been processed (tests and benches). */
  async idle(): Promise<void> {
    await this.queue;
  }

  private async settled(): Promise<void> {
    await Promise.allSettled([this.queue, this.partial?.run, ...this.finals]);
  }

  private open(): void {
    if (this.isClosed) throw new LiveError('closed', 'the live session is closed');
  }

  private check(c: LiveConfig): void {
    if (c.turnDetection) {
      if (!this.o.vadStream) throw new LiveError('turn_detection_unavailable', 'server turn detection is not available on this server');
      try {
        checkTurnDetectorOptions(c.turnDetection);
      } catch (err) {
        throw new LiveError('invalid_config', `turn detection: ${(err as Error).message}`);
      }
    }
    if (!(c.partialSeconds >= 0.1 && c.partialSeconds <= 30)) {
      throw new LiveError('invalid_config', `partialSeconds must be between 0.1 and 30, got ${c.partialSeconds}`);
    }
  }

  private enqueue(work: () => void | Promise<void>): void {
    this.queue = this.queue.then(async () => {
      try {
        if (!this.isClosed) await work();
      } catch (err) {
        // Only turn detection can fail here (its model run): the session reports it and goes on.
        this.emit({ type: 'error', message: `processing the audio failed: ${err instanceof Error ? err.message : String(err)}` });
      }
    });
  }

  private emit(event: LiveEvent): void {
    if (this.isClosed) return;
    try {
      this.listener(event);
    } catch {
      // A listener that throws (its client gone mid-send) must not become an unhandled rejection inside a partial
      // or a final, which would end the process: the session stops as if closed, cancelling its work.
      void this.close();
    }
  }

  private setDetector(options: LiveConfig['turnDetection']): void {
    this.detector?.close();
    this.detector = options && this.o.vadStream ? new TurnDetector(this.o.vadStream(), options) : undefined;
    this.detectorOffset = this.buffer.end;
  }

  /** Turn detection starts afresh from the next sample (after a commit or clear: speech going on starts a new turn). */
  private restartDetector(): void {
    this.detector?.reset();
    this.detectorOffset = this.buffer.end;
  }

  private async ingest(pcm: Float32Array, arrival: number): Promise<void> {
    this.buffer.append(pcm);
    this.lastArrival = arrival;
    const detector = this.detector;
    if (detector) {
      let events: SpeechEvent[];
      try {
        events = await detector.push(pcm);
      } catch (err) {
        // The VAD state is gone (its thread restarted, or a model run failed) and this audio went unscored:
        // detection goes on after it, so later speech events keep their places and an open turn still ends.
        detector.skipUnscored();
        throw err;
      }
      if (this.isClosed) return;
      for (const e of events) this.onSpeech(e);
    } else {
      // Without turn detection all audio belongs to a turn, which the client commits.
      this.turn ??= new LiveTurn(this.host, Math.max(this.uncommittedFrom, this.buffer.start));
    }
    this.limitTurn();
    this.buffer.dropBefore(Math.min(this.turn?.start ?? Infinity, Math.max(this.uncommittedFrom, this.buffer.end - samples(HISTORY_SECONDS))));
    this.schedulePartial();
  }

  private onSpeech(e: SpeechEvent): void {
    const sample = e.sample + this.detectorOffset;
    if (e.type === 'speech_started') {
      if (this.turn) return;
      this.startTurn(Math.max(sample, this.uncommittedFrom, this.buffer.start));
      return;
    }
    const turn = this.turn;
    if (!turn) return;
    this.emit({ type: 'speechStopped', itemId: turn.itemId, audioEndMs: ms(sample) });
    // The prefix padding, mirrored: the end of the last word may be quieter than the detector's threshold.
    const padding = samples(this.config.turnDetection!.prefixPaddingMs / 1000);
    this.endTurn(Math.max(turn.start, Math.min(this.buffer.end, sample + padding)), 'silence', this.lastArrival);
  }

  private startTurn(start: number): void {
    this.turn = new LiveTurn(this.host, start);
    this.emit({ type: 'speechStarted', itemId: this.turn.itemId, audioStartMs: ms(start) });
  }

  /** A turn never outgrows one model chunk: it is committed at the maximum length and the speech goes on in a new one. */
  private limitTurn(): void {
    while (this.turn && this.buffer.end - this.turn.start >= this.maxTurnSamples) {
      const cut = this.turn.start + this.maxTurnSamples;
      const detecting = this.detector !== undefined;
      if (detecting) this.emit({ type: 'speechStopped', itemId: this.turn.itemId, audioEndMs: ms(cut) });
      this.endTurn(cut, 'max_length', this.lastArrival);
      if (!detecting) this.turn = new LiveTurn(this.host, cut);
      else if (this.detector!.inSpeech) this.startTurn(cut);
    }
  }

  private endTurn(end: number, reason: CommitReason, endArrival: number): void {
    const turn = this.turn!;
    this.turn = undefined;
    this.abortPartial(turn);
    this.emit({ type: 'committed', itemId: turn.itemId, previousItemId: this.previousItemId, reason });
    this.previousItemId = turn.itemId;
    this.stats.turns++;
    this.uncommittedFrom = end;
    const run = turn.finish(this.buffer.slice(turn.start, end), endArrival, this.closer.signal).finally(() => this.finals.delete(run));
    this.finals.add(run);
  }

  private abortPartial(turn: LiveTurn): void {
    if (this.partial?.turn === turn) this.partial.abort.abort();
  }

  /** Starts the current turn's next partial when it is due and none is in flight (a late one is skipped, not queued). */
  private schedulePartial(): void {
    const turn = this.turn;
    if (!turn || this.partial || this.isClosed) return;
    const end = this.buffer.end;
    if (!turn.partialDue(end - turn.start, samples(this.config.partialSeconds))) return;
    const abort = new AbortController();
    this.stats.partials++;
    const run = turn
      .partial(this.buffer.slice(turn.start, end), this.lastArrival, abort.signal)
      .then((outcome) => {
        if (outcome === 'refused') this.stats.partialsRefused++;
        if (outcome === 'failed') this.stats.partialsFailed++;
      })
      .finally(() => {
        this.partial = undefined;
        this.schedulePartial();
      });
    this.partial = { turn, abort, run };
  }
}
