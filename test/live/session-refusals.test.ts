import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiveSession } from '../../src/live/session.js';
import type { AsrPool } from '../../src/pool/pool.js';
import { clip, Events, pcm16, Recorder, SR, startPool } from './live-support.js';

// One sequence at a time and no queue: while one transcription runs, every other is refused.
let pool: AsrPool;
let speech: Float32Array;

beforeAll(async () => {
  pool = await startPool('default', { maxBatch: 1, maxQueue: 0 });
  speech = await clip(pool, 'dropout');
});

afterAll(async () => {
  await pool?.drain(1000);
});

const config = { turnDetection: null, format: { encoding: 'pcm16', sampleRate: 16000 } } as const;

describe('live session when the pool has no room', () => {
  // before the test that drains the pool
  it('counts a partial that fails for another reason, skips it, and still completes the turn', async () => {
    const recorder = new Recorder(pool);
    let calls = 0;
    const transcribe: typeof recorder.transcribe = (...args) => (++calls === 1 ? Promise.reject(new Error('the engine failed')) : recorder.transcribe(...args));
    const events = new Events();
    const live = new LiveSession({ transcribe, config }, events.listener);
    live.append(pcm16(speech.subarray(0, 2 * SR), 16000));
    await live.idle();
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    expect(live.stats).toMatchObject({ partialsFailed: 1, partialsRefused: 0 });
    expect(live.stats.partials).toBeGreaterThanOrEqual(1);
    expect(events.of('failed')).toHaveLength(0);
    await live.close();
  });

  it('skips refused partials, retries a refused final until it runs, and fails finals once the pool drains', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = new LiveSession({ transcribe: recorder.transcribe, config }, events.listener);
    // two turns back to back: the second's final is refused while the first's runs, and retried
    for (let turn = 0; turn < 2; turn++) {
      live.append(pcm16(speech.subarray(0, 4 * SR), 16000));
      live.commit();
    }
    await events.until(() => events.of('completed').length === 2);
    const refusedFinals = recorder.calls.filter((c) => c.seconds === 4 && c.result === undefined).length;
    expect(refusedFinals).toBeGreaterThan(0);
    expect(events.of('completed').map((c) => c.itemId)).toEqual(events.of('committed').map((c) => c.itemId));

    // a partial refused while another session's transcription holds the only place is skipped, not queued
    const other = new LiveSession({ transcribe: recorder.transcribe, config }, () => {});
    other.append(pcm16(speech, 16000));
    other.commit();
    await other.idle();
    const { partials, partialsRefused } = live.stats;
    live.append(pcm16(speech.subarray(0, SR), 16000));
    await live.idle();
    await recorder.settled();
    expect(live.stats).toMatchObject({ partials: partials + 1, partialsRefused: partialsRefused + 1 });

    const draining = pool.drain(5000);
    live.commit();
    await events.until(() => events.of('failed').length === 1);
    expect(events.of('failed')[0]).toMatchObject({ itemId: events.of('committed')[2]!.itemId, message: expect.stringMatching(/draining/) });
    await draining;
    await Promise.all([live.close(), other.close()]);
  });

  it('drops audio beyond the backlog limit and counts it', async () => {
    const live = new LiveSession({ transcribe: () => new Promise(() => {}), config, maxBacklogSeconds: 1 }, () => {});
    const piece = pcm16(speech.subarray(0, 0.6 * SR), 16000);
    live.append(piece);
    live.append(piece); // while the first is still queued: 1.2 s behind
    expect(live.stats.droppedSeconds).toBeCloseTo(0.6, 5);
    await live.idle();
    live.append(piece);
    expect(live.stats.droppedSeconds).toBeCloseTo(0.6, 5);
    void live.close();
  });
});
