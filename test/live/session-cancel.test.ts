import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REPEATS } from '../../src/live/agreement.js';
import { LiveSession } from '../../src/live/session.js';
import type { AsrPool } from '../../src/pool/pool.js';
import { clip, Events, HEADER, pcm16, play, Recorder, SR, startPool } from './live-support.js';

// The 'never-stops' model cycles its sentence until the token budget runs out: a repetition loop, and long
// transcriptions to cancel.
let pool: AsrPool;
let speech: Float32Array;

beforeAll(async () => {
  // one sequence at a time, long token budgets: transcriptions stay in flight (running or queued) for seconds
  pool = await startPool('never-stops', { tokensPerSecond: 200, maxBatch: 1 });
  speech = await clip(pool, 'echo');
});

afterAll(async () => {
  await pool?.drain(1000);
});

const PCM16K = { encoding: 'pcm16', sampleRate: 16000 } as const;

describe('live session against a runaway model', () => {
  it('keeps a repetition loop out of deltas and the transcript', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = new LiveSession({ transcribe: recorder.transcribe, config: { turnDetection: null, format: PCM16K } }, events.listener);
    await play(live, pcm16(speech.subarray(0, 3 * SR), 16000), 32000, { recorder });
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    const final = recorder.calls.at(-1)!.result!.text;
    const [done] = events.of('completed');
    const sentence = done!.transcript.split('.')[0]!.trim();
    // the model said its sentence over and over; the turn keeps it at most MAX_REPEATS times
    expect(final.split(sentence).length - 1).toBeGreaterThan(MAX_REPEATS + 2);
    expect(done!.transcript.split(sentence).length - 1).toBeLessThanOrEqual(MAX_REPEATS);
    expect(done!.transcript).toBe(events.text(done!.itemId));
    expect(done!.transcript).not.toMatch(HEADER);
    await live.close();
  });

  it('close cancels the partial and the finals in flight at once, and says nothing more', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = new LiveSession({ transcribe: recorder.transcribe, config: { turnDetection: null, format: PCM16K } }, events.listener);
    // two turns committed, their finals (7.5 s: a 1528-token budget each) running or queued...
    for (let turn = 0; turn < 2; turn++) {
      live.append(pcm16(speech, 16000));
      live.commit();
      await live.idle();
    }
    // ...once the first turn's partial, cancelled by its commit, is over: a third turn with its partial
    while (recorder.inFlight > 2) await new Promise((r) => setTimeout(r, 5));
    live.append(pcm16(speech.subarray(0, 1 * SR), 16000));
    await live.idle();
    expect(recorder.inFlight).toBe(3);
    expect(recorder.calls.at(-1)!.seconds).toBe(1);
    const seen = events.list.length;
    const t0 = performance.now();
    await live.close();
    const closing = performance.now() - t0;
    expect(recorder.inFlight).toBe(0);
    expect(recorder.calls.every((c) => c.result?.cancelled)).toBe(true);
    expect(closing).toBeLessThan(2000);
    expect(pool.stats).toMatchObject({ runningSequences: 0, admitted: 0 });
    live.append(pcm16(speech.subarray(0, SR), 16000));
    expect(live.stats.droppedSeconds).toBeCloseTo(1, 3);
    await new Promise((r) => setTimeout(r, 200));
    expect(events.list.length).toBe(seen);
    expect(events.of('completed')).toEqual([]);
    expect(events.of('failed')).toEqual([]);
  });
});
