import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm, SAMPLE_RATE } from '../../src/audio/pcm.js';
import { AsrEngine, type ChunkResult } from '../../src/asr/engine.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';

/*
 * Stage timings under concurrency: while one row decodes, 30 s chunks arrive (log-mel and encoder each). Every
 * stage is timed while it alone holds the engine's lock, so the stages of all requests are disjoint in time and
 * their sum cannot exceed the wall time; a step clock that also counted another request's log-mel or encoder
 * (onnxruntime-node runs a session after a setImmediate) made the sum exceed it by about their cost.
 */

/** 30 s of deterministic noise: a full chunk's worth of log-mel and encoder work. */
function longChunk(): Float32Array {
  const pcm = new Float32Array(30 * SAMPLE_RATE);
  let state = 0x1234567;
  for (let i = 0; i < pcm.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    pcm[i] = (state / 0x1_0000_0000 - 0.5) * 0.1;
  }
  return pcm;
}

const stageMs = (r: ChunkResult) => r.timings.featuresMs + r.timings.encoderMs + r.timings.prefillMs + r.timings.stepsMs;

describe('stage timings under concurrency', () => {
  let engine: AsrEngine;
  const short = decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav')));

  beforeAll(async () => {
    const logger = { warn: () => {}, info: () => {} };
    engine = await AsrEngine.load({ modelDir: fixtureModel('never-stops'), device: 'cpu', logger, maxBatch: 4 });
    await engine.warmUp();
  });
  afterAll(() => engine.release());

  it("keeps a decoding row's steps free of the encoder work of chunks that arrive meanwhile", async () => {
    const chunk = longChunk();
    const arrivals: Promise<ChunkResult>[] = [];
    let accepted = 0;
    const t0 = performance.now();
    const long = engine.transcribeChunk(short, {
      maxNewTokens: 120,
      // Three 30 s chunks arrive from the event loop while the long row decodes; a budget of one token ends
      // each at its prefill, so they share no step with it and every stage time below is counted once.
      shouldStop: () => {
        if (++accepted % 20 === 10 && arrivals.length < 3) {
          setImmediate(() => arrivals.push(engine.transcribeChunk(chunk, { maxNewTokens: 1 })));
        }
        return false;
      },
    });
    const longRow = await long;
    const others = await Promise.all(arrivals);
    const wall = performance.now() - t0;

    expect(others).toHaveLength(3);
    expect(longRow.timings.steps).toBe(119);
    for (const r of others) expect(r.timings.steps).toBe(0);
    const sum = stageMs(longRow) + others.reduce((a, r) => a + stageMs(r), 0);
    expect(sum).toBeLessThanOrEqual(wall);
  });
});
