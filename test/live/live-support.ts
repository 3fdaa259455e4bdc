import { readFileSync } from 'node:fs';
import { resample } from '../../src/audio/resample.js';
import { poolTranscribe } from '../../src/live/pool-transcribe.js';
import type { LiveSession } from '../../src/live/session.js';
import type { LiveEvent, TranscribeCall, TurnTranscribe } from '../../src/live/types.js';
import type { AsrPool } from '../../src/pool/pool.js';
import type { Transcription } from '../../src/pool/result.js';
import { sharedPath } from '../support/shared.js';

export const SR = 16000;

export { startPool } from '../support/pool.js';

/** A real clip from ../shared at 16 kHz. */
export function clip(pool: AsrPool, name: string): Promise<Float32Array> {
  return pool.decode(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
}

export { concat, silence } from '../support/speech-mix.js';

/** 16 kHz float samples as PCM16 LE bytes at `rate` (24 kHz: resampled, as a client would send it). */
export function pcm16(x: Float32Array, rate: 16000 | 24000): Uint8Array {
  const y = rate === SR ? x : resample(x, SR, rate);
  const bytes = new Uint8Array(2 * y.length);
  const view = new DataView(bytes.buffer);
  y.forEach((v, i) => view.setInt16(2 * i, Math.max(-32768, Math.min(32767, Math.round(v * 32767))), true));
  return bytes;
}

/** One transcription the session asked for, as the pool saw it. */
export interface Call {
  seconds: number;
  language: TranscribeCall['language'];
  prefix: TranscribeCall['prefix'];
  whole: boolean | undefined;
  result?: Transcription;
}

/** The pool's transcriptions, recorded: what each call asked for, what came back, and how many are in flight. */
export class Recorder {
  readonly calls: Call[] = [];
  inFlight = 0;
  readonly transcribe: TurnTranscribe;

  constructor(pool: AsrPool) {
    const inner = poolTranscribe(pool);
    this.transcribe = async (pcm, call) => {
      const c: Call = { seconds: pcm.length / SR, language: call.language, prefix: call.prefix, whole: call.whole };
      this.calls.push(c);
      this.inFlight++;
      try {
        c.result = await inner(pcm, call);
        return c.result;
      } finally {
        this.inFlight--;
      }
    };
  }

  async settled(): Promise<void> {
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  }
}

/** Events with the time they came, and waiting for one. */
export class Events {
  readonly list: { at: number; e: LiveEvent }[] = [];
  private waiters: (() => void)[] = [];

  readonly listener = (e: LiveEvent): void => {
    this.list.push({ at: performance.now(), e });
    for (const w of this.waiters.splice(0)) w();
  };

  of<T extends LiveEvent['type']>(type: T): Extract<LiveEvent, { type: T }>[] {
    return this.list.filter((x) => x.e.type === type).map((x) => x.e as Extract<LiveEvent, { type: T }>);
  }

  async until(test: () => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      if (Date.now() > deadline) throw new Error(`event not seen within ${timeoutMs} ms: ${JSON.stringify(this.list.map((x) => x.e.type))}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  /** Deltas of one turn joined. */
  text(itemId: string): string {
    return this.of('delta').filter((d) => d.itemId === itemId).map((d) => d.text).join('');
  }
}

/**
 * Feeds `bytes` in pieces of `pieceMs`: in real time (`realTime`), or as fast as the session takes them,
 * each piece after the partials it started have finished (the pieces then fix what every partial covers).
 */
export async function play(
  session: LiveSession,
  bytes: Uint8Array,
  bytesPerSecond: number,
  o: { pieceMs?: number; realTime?: boolean; recorder?: Recorder } = {},
): Promise<void> {
  const piece = Math.round(((o.pieceMs ?? 100) * bytesPerSecond) / 1000);
  const t0 = performance.now();
  for (let at = 0, i = 1; at < bytes.length; at += piece, i++) {
    session.append(bytes.subarray(at, at + piece));
    if (o.realTime) {
      const wait = t0 + i * (o.pieceMs ?? 100) - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    } else {
      await session.idle();
      await o.recorder?.settled();
    }
  }
  await session.idle();
}

/** No model header ("language English<asr_text>") in a text. */
export const HEADER = /language\s+\w+\s*<asr_text>|<asr_text>|^language [A-Z]/;
