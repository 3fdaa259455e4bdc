import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MULAW_TABLE } from '../../src/audio/g711.js';
import { resample } from '../../src/audio/resample.js';
import { LiveSession } from '../../src/live/session.js';
import { LiveError, type LiveConfig } from '../../src/live/types.js';
import type { AsrPool } from '../../src/pool/pool.js';
import { clip, Events, HEADER, pcm16, play, Recorder, SR, startPool } from './live-support.js';

const PCM16K = { encoding: 'pcm16', sampleRate: 16000 } as const;
let pool: AsrPool;
let noise: Float32Array;
let farField: Float32Array;

beforeAll(async () => {
  pool = await startPool('default');
  noise = await clip(pool, 'noise');
  farField = await clip(pool, 'far_field');
});

afterAll(async () => {
  await pool?.drain(1000);
});

function session(recorder: Recorder, events: Events, config: Partial<LiveConfig> = {}, maxTurnSeconds?: number): LiveSession {
  return new LiveSession(
    { transcribe: recorder.transcribe, config: { turnDetection: null, ...config }, ...(maxTurnSeconds ? { maxTurnSeconds } : {}) },
    events.listener,
  );
}

/** Every turn's deltas joined equal its transcript, and no text carries the model's header. */
function expectConsistent(events: Events): void {
  for (const c of events.of('completed')) expect(c.transcript).toBe(events.text(c.itemId));
  for (const d of events.of('delta')) expect(d.text).not.toMatch(HEADER);
}

describe('live session on the generated model, the client committing', () => {
  it('streams stable text while the turn grows, then a final that continues it', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events);
    await play(live, pcm16(noise, 24000), 48000, { recorder });

    const before = events.of('delta');
    expect(before.length).toBeGreaterThan(0);
    const itemId = before[0]!.itemId;
    expect(itemId).toMatch(/^item_[\w-]{16}$/);
    // partials re-transcribed the growing turn every 0.8 s, whole, forced with the text emitted so far
    const partials = recorder.calls.slice();
    expect(partials.length).toBeGreaterThanOrEqual(Math.floor(noise.length / SR / 0.9));
    partials.forEach((c, i) => {
      expect(c.whole).toBe(true);
      // at the first 100 ms piece that brings 0.8 s of new audio (less the resampler's ~2 ms held back)
      const grew = Math.round((c.seconds - (partials[i - 1]?.seconds ?? 0)) * SR);
      expect(grew).toBeGreaterThanOrEqual(0.8 * SR);
      expect(grew).toBeLessThan(0.91 * SR);
      expect(c.result!.text).not.toMatch(HEADER);
    });
    const firstDelta = partials.findIndex((c) => c.prefix !== undefined);
    expect(firstDelta).toBeGreaterThan(1); // two hypotheses had to agree first
    for (const c of partials.slice(firstDelta)) expect(c.prefix?.language).toBe('English');

    const emitted = events.text(itemId);
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    expect(events.of('committed')).toEqual([{ type: 'committed', itemId, previousItemId: null, reason: 'client' }]);
    const final = recorder.calls.at(-1)!;
    expect(final.prefix).toEqual({ language: 'English', text: emitted });
    expect(final.seconds).toBeCloseTo(noise.length / SR, 1);
    const [done] = events.of('completed');
    expect(done).toMatchObject({ itemId, language: 'English', audioSeconds: final.seconds });
    expect(done!.transcript.startsWith(emitted)).toBe(true);
    expect(done!.transcript).toBe(final.result!.text);
    expect(done!.usage.outputTokens).toBeGreaterThan(0);
    expect(done!.usage.audioTokens).toBeGreaterThan(0);
    expectConsistent(events);
    expect(live.stats).toMatchObject({ turns: 1, partials: partials.length, partialsRefused: 0, partialsFailed: 0, droppedSeconds: 0 });
    await live.close();
  });

  it("starts each turn with no prefix and none of the previous turn's text", async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { partialSeconds: 0.8, format: PCM16K });
    await play(live, pcm16(noise, 16000), 32000, { recorder });
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    const first = events.of('completed')[0]!;
    expect(first.transcript.length).toBeGreaterThan(0);
    const secondStart = recorder.calls.length;

    await play(live, pcm16(farField, 16000), 32000, { recorder });
    live.commit();
    await events.until(() => events.of('completed').length === 2);
    const second = events.of('completed')[1]!;
    expect(second.itemId).not.toBe(first.itemId);
    expect(recorder.calls[secondStart]!.prefix).toBeUndefined();
    expect(recorder.calls[secondStart]!.seconds).toBeCloseTo(0.8, 2);
    expect(second.transcript).not.toContain(first.transcript);
    for (const c of recorder.calls.slice(secondStart)) expect(c.prefix?.text ?? '').not.toContain(first.transcript);
    expect(events.of('committed')[1]).toMatchObject({ itemId: second.itemId, previousItemId: first.itemId });
    expectConsistent(events);
    await live.close();
  });

  it('a language changed during a turn reaches it until its first delta, then applies from the next turn; unset, none is forced', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { format: PCM16K, language: 'English' });
    await play(live, pcm16(noise, 16000), 32000, { recorder });
    expect(events.of('delta').length).toBeGreaterThan(0);
    live.configure({ language: 'French' });
    live.commit();
    await events.until(() => events.of('completed').length + events.of('failed').length === 1);
    expect(events.of('failed')).toEqual([]);
    // the final continues the English text: it is not forced into French as well (the engine refuses that)
    expect(recorder.calls.at(-1)!.prefix?.language).toBe('English');
    expect(recorder.calls.at(-1)!.language).toBeUndefined();

    const secondStart = recorder.calls.length;
    await play(live, pcm16(noise.subarray(0, 1 * SR), 16000), 32000, { recorder });
    expect(recorder.calls[secondStart]).toMatchObject({ language: 'French', prefix: undefined });
    live.commit();
    await events.until(() => events.of('completed').length === 2);
    live.configure({ language: undefined });
    const thirdStart = recorder.calls.length;
    await play(live, pcm16(noise.subarray(0, 1 * SR), 16000), 32000, { recorder });
    expect(recorder.calls[thirdStart]!.language).toBeUndefined();
    live.commit();
    await events.until(() => events.of('completed').length === 3);

    // a change before the turn's first delta still reaches it: its text is forced in the language it was heard in
    live.configure({ language: 'English' });
    live.append(pcm16(noise.subarray(0, 0.1 * SR), 16000));
    await live.idle();
    live.configure({ language: 'French' });
    const fourthStart = recorder.calls.length;
    await play(live, pcm16(noise.subarray(0.1 * SR), 16000), 32000, { recorder });
    const forced = recorder.calls.slice(fourthStart).filter((c) => c.prefix);
    expect(forced.length).toBeGreaterThan(0);
    for (const c of forced) expect(c.prefix!.language).toBe('French');
    expectConsistent(events);
    await live.close();
  });

  it('a listener that throws stops the session, never the process: its work is cancelled and nothing more is sent', async () => {
    const recorder = new Recorder(pool);
    const seen: string[] = [];
    const live = new LiveSession({ transcribe: recorder.transcribe, config: { turnDetection: null } }, (e) => {
      seen.push(e.type);
      if (e.type === 'delta') throw new Error('the socket is gone');
    });
    // vitest fails the run on an unhandled rejection, which is what a throw inside a partial would have been
    await play(live, pcm16(noise, 24000), 48000, { recorder });
    expect(seen.filter((t) => t === 'delta')).toHaveLength(1);
    expect(live.isClosed).toBe(true);
    expect(() => live.commit()).toThrow(new LiveError('closed', 'the live session is closed'));
    await live.close();
    expect(recorder.inFlight).toBe(0);
    expect(pool.stats).toMatchObject({ runningSequences: 0, admitted: 0 });
    expect(seen.at(-1)).toBe('delta');
  });

  it('refuses a commit of less than 100 ms, and clear drops the turn without a transcription', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { format: PCM16K });
    expect(() => live.commit()).toThrow(new LiveError('buffer_too_small', 'buffer too small. Expected at least 100ms of audio, but buffer only has 0.00ms of audio.'));
    live.append(pcm16(noise.subarray(0, 0.05 * SR), 16000));
    expect(() => live.commit()).toThrow(/only has 50.00ms/);

    await play(live, pcm16(noise.subarray(0, 2 * SR), 16000), 32000, { recorder });
    live.clear();
    expect(() => live.commit()).toThrow(LiveError); // before the queue got to the clear
    await live.idle();
    const [cleared] = events.of('cleared');
    expect(cleared?.itemId).toMatch(/^item_/);
    expect(() => live.commit()).toThrow(LiveError);
    await recorder.settled();
    expect(events.of('committed')).toEqual([]);
    expect(events.of('completed')).toEqual([]);
    expect(events.list.every((x) => x.e.type === 'cleared' || ('itemId' in x.e && x.e.itemId === cleared!.itemId))).toBe(true);

    // after the clear, new audio is a new turn of its own
    await play(live, pcm16(noise.subarray(0, 1 * SR), 16000), 32000, { recorder });
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    const [done] = events.of('completed');
    expect(done!.itemId).not.toBe(cleared!.itemId);
    expect(done!.audioSeconds).toBeCloseTo(1, 2);
    expect(live.stats.turns).toBe(1);
    await live.close();
    expect(() => live.commit()).toThrow(new LiveError('closed', 'the live session is closed'));
  });

  it('a commit that finds the turn just ended by the server gets buffer_too_small as an error event', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { format: PCM16K }, 1);
    // 1.05 s in one append: the session ends the turn at 1 s (its maximum) before the commit's turn comes
    live.append(pcm16(noise.subarray(0, 1.05 * SR), 16000));
    live.commit();
    await live.idle();
    await events.until(() => events.of('completed').length === 1);
    expect(events.of('committed').map((c) => c.reason)).toEqual(['max_length']);
    expect(events.of('error')).toEqual([{ type: 'error', code: 'buffer_too_small', message: 'buffer too small. Expected at least 100ms of audio, but buffer only has 50.00ms of audio.' }]);
    await live.close();
  });

  it('commits a turn at its maximum length and goes on in a new one, so no turn needs chunking', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { format: PCM16K }, 3);
    await play(live, pcm16(noise.subarray(0, 7 * SR), 16000), 32000, { recorder });
    live.commit();
    await events.until(() => events.of('completed').length === 3);
    expect(events.of('committed').map((c) => c.reason)).toEqual(['max_length', 'max_length', 'client']);
    const seconds = new Map(events.of('completed').map((c) => [c.itemId, c.audioSeconds]));
    expect(events.of('committed').map((c) => seconds.get(c.itemId))).toEqual([3, 3, 1]);
    expect(Math.max(...recorder.calls.map((c) => c.seconds))).toBeLessThanOrEqual(3);
    expectConsistent(events);
    await live.close();
  });

  it('takes G.711 mu-law at 8 kHz after a format change', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events);
    live.configure({ format: { encoding: 'mulaw', sampleRate: 8000 } });
    // nearest mu-law code of each 8 kHz sample
    const x = resample(farField, SR, 8000);
    const codes = Uint8Array.from(x, (v) => {
      let best = 0;
      for (let c = 1; c < 256; c++) if (Math.abs(MULAW_TABLE[c]! - v * 32768) < Math.abs(MULAW_TABLE[best]! - v * 32768)) best = c;
      return best;
    });
    await play(live, codes, 8000, { recorder, pieceMs: 20 });
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    const [done] = events.of('completed');
    expect(done!.audioSeconds).toBeGreaterThan(farField.length / SR - 0.01);
    expect(done!.audioSeconds).toBeLessThanOrEqual(farField.length / SR);
    expect(done!.transcript.length).toBeGreaterThan(0);
    expectConsistent(events);
    await live.close();
  });

  it('streams in real time: partials keep pace with the audio, latency from the first proposal of the text', async () => {
    const recorder = new Recorder(pool);
    const events = new Events();
    const live = session(recorder, events, { format: PCM16K });
    const t0 = performance.now();
    await play(live, pcm16(noise, 16000), 32000, { realTime: true });
    const playing = performance.now() - t0;
    // every partial that started during playback covered audio that had arrived by then
    expect(live.stats.partials).toBeGreaterThanOrEqual(4);
    live.commit();
    await events.until(() => events.of('completed').length === 1);
    const latencies = events.of('delta').flatMap((d) => (d.latencyMs === undefined ? [] : [d.latencyMs]));
    // in 100 ms pieces, partials cover 0.8, 1.6, ... s while each takes under 0.8 s: two of them agree
    expect(latencies.length).toBeGreaterThan(0);
    // a text is stable once a later partial, covering at least 0.8 s more audio (0.8 s later in real time), agrees
    for (const ms of latencies) expect(ms).toBeGreaterThan(700);
    const [done] = events.of('completed');
    console.log(
      `real time: ${(noise.length / SR).toFixed(2)} s played in ${(playing / 1000).toFixed(2)} s, ${live.stats.partials} partials, ` +
        `delta latencies ${latencies.map((l) => l.toFixed(0)).join(', ') || 'none'} ms, final ${done!.finalLatencyMs.toFixed(0)} ms`,
    );
    expectConsistent(events);
    await live.close();
  });
});
