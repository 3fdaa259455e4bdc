import { readFileSync } from 'node:fs';
import { Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { AsrEngine, type ChunkOptions, type ChunkResult, type EngineOptions } from '../../src/asr/engine.js';
import { CORRUPT_TEXT, FIXTURE_SENTENCES, REPEATED_TEXT, type FixtureVariantName } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';

/*
 * Continuous batching must not change a single token: every sequence decoded together with others (ragged prompts,
 * joining mid-decode, cancelled or cut rows beside it) equals the same sequence decoded alone. The generated model is
 * KV-sensitive per row, so a cache row, mask or position that belongs to another row corrupts the transcript.
 */

const pcm = new Map<string, Float32Array>();
const clip = (name: string) => {
  if (!pcm.has(name)) pcm.set(name, decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`))));
  return pcm.get(name)!;
};
const quiet = { warn: () => {}, info: () => {} };
const load = (variant: FixtureVariantName, extra: Partial<EngineOptions> = {}) =>
  AsrEngine.load({ modelDir: fixtureModel(variant), device: 'cpu', logger: quiet, maxBatch: 4, ...extra });

interface Job {
  clip: string;
  options: Partial<ChunkOptions>;
}

/** Different clips (prompt lengths), auto or forced language, with and without context: ragged prompts. */
const JOBS: Job[] = [
  { clip: 'noise', options: {} },
  { clip: 'far_field', options: { language: 'English' } },
  { clip: 'echo', options: { context: 'Qwen3-ASR, a kitchen, hot words: fox' } },
  { clip: 'mixed', options: {} },
  { clip: 'recording', options: { language: 'English', context: 'a meeting' } },
  { clip: 'dropout', options: {} },
];

const run = (engine: AsrEngine, job: Job, extra: Partial<ChunkOptions> = {}) =>
  engine.transcribeChunk(clip(job.clip), { maxNewTokens: 60, ...job.options, ...extra });

/** One at a time: each call finishes before the next starts. */
async function alone(engine: AsrEngine, jobs: Job[]): Promise<ChunkResult[]> {
  const out: ChunkResult[] = [];
  for (const job of jobs) out.push(await run(engine, job));
  return out;
}

const meanBatch = (rs: ChunkResult[]) => rs.reduce((a, r) => a + r.timings.stepRows, 0) / rs.reduce((a, r) => a + r.timings.steps, 0);

type Feeds = Record<string, Tensor>;
/** Wraps the step session's run so a test can alter what the backend feeds it (a fault the fixture must notice). */
function tamperStep(engine: AsrEngine, change: (feeds: Feeds) => Feeds) {
  const session = engine.sessions.step;
  const original = session.run;
  const run = original.bind(session);
  session.run = ((feeds: Feeds, ...rest: unknown[]) => (run as (f: Feeds, ...r: unknown[]) => ReturnType<typeof run>)(change(feeds), ...rest)) as typeof session.run;
  return () => (session.run = original);
}

/** A copy of a [B, ...] tensor with rows a and b exchanged. */
function swapRows(t: Tensor, a: number, b: number): Tensor {
  const data = (t.data as Float32Array).slice();
  const row = data.length / t.dims[0]!;
  data.set((t.data as Float32Array).subarray(b * row, (b + 1) * row), a * row);
  data.set((t.data as Float32Array).subarray(a * row, (a + 1) * row), b * row);
  return new Tensor(t.type, data, t.dims);
}

describe('continuous batching on the dynamic-batch fixture', () => {
  let engine: AsrEngine;
  let solo: ChunkResult[];

  beforeAll(async () => {
    engine = await load('default');
    solo = await alone(engine, JOBS);
  });
  afterAll(() => engine.release());

  it('reads a batchable step graph at load', () => {
    expect(engine.batching).toEqual({ dynamic: true, maxBatch: 4 });
    expect(engine.backend.maxBatch).toBe(4);
  });

  it('decodes one at a time to distinct sentences, each step a batch of one', () => {
    expect(new Set(solo.map((r) => r.text)).size).toBeGreaterThanOrEqual(3);
    for (const r of solo) {
      expect(FIXTURE_SENTENCES).toContain(r.text);
      expect(r.timings.stepRows).toBe(r.timings.steps);
    }
    expect(new Set(solo.map((r) => r.promptTokens)).size).toBe(JOBS.length);
  });

  it('decodes ragged concurrent prompts together, token for token as alone, at most maxBatch rows per step', async () => {
    const together = await Promise.all(JOBS.map((job) => run(engine, job)));
    together.forEach((r, i) => {
      expect(r.tokens, JOBS[i]!.clip).toEqual(solo[i]!.tokens);
      expect(r.text).toBe(solo[i]!.text);
      expect(r.timings.stepRows).toBeLessThanOrEqual(4 * r.timings.steps);
    });
    // Six requests, four rows: the last two join as the first ones leave.
    expect(meanBatch(together)).toBeGreaterThan(2);
    expect(engine.backend.liveHandles).toBe(0);
  });

  it('lets a sequence join a running batch mid-decode', async () => {
    let second: Promise<ChunkResult> | undefined;
    let checks = 0;
    const first = await run(engine, JOBS[0]!, {
      // Called after each accepted token: the third starts a request while this one decodes.
      shouldStop: () => {
        if (++checks === 4) second = run(engine, JOBS[3]!);
        return false;
      },
    });
    const joined = await second!;
    expect(first.tokens).toEqual(solo[0]!.tokens);
    expect(joined.tokens).toEqual(solo[3]!.tokens);
    // The first decoded alone for a few steps, then with the second.
    expect(first.timings.stepRows).toBeGreaterThan(first.timings.steps);
    expect(first.timings.stepRows).toBeLessThan(2 * first.timings.steps);
    expect(engine.backend.liveHandles).toBe(0);
  });

  it('drops a cancelled row at once and leaves the others untouched', async () => {
    let checks = 0;
    const together = await Promise.all(JOBS.slice(0, 4).map((job, i) => run(engine, job, i === 1 ? { shouldStop: () => ++checks > 5 } : {})));
    // Checked before its prefill, then after each token: the sixth check, after the fifth token, stops it.
    expect(together[1]).toMatchObject({ cancelled: true, truncated: false, tokens: solo[1]!.tokens.slice(0, 5) });
    for (const i of [0, 2, 3]) {
      expect(together[i]!.tokens).toEqual(solo[i]!.tokens);
      expect(together[i]!.cancelled).toBe(false);
    }
    expect(together[1]!.timings.steps).toBe(4);
    expect(engine.backend.liveHandles).toBe(0);
  });

  it('cuts one row at its own token budget while the others go on', async () => {
    const together = await Promise.all(JOBS.slice(0, 4).map((job, i) => run(engine, job, i === 2 ? { maxNewTokens: 5 } : {})));
    expect(together[2]).toMatchObject({ truncated: true, tokens: solo[2]!.tokens.slice(0, 5) });
    for (const i of [0, 1, 3]) expect(together[i]!.tokens).toEqual(solo[i]!.tokens);
    expect(engine.backend.liveHandles).toBe(0);
  });

  it('notices a misplaced cache row: two rows of the batch cache swapped corrupt the transcripts', async () => {
    const fresh = await load('default');
    const restore = tamperStep(fresh, (feeds) => {
      const out = { ...feeds };
      if (feeds.attention_mask!.dims[0]! < 2) return out;
      for (const name of Object.keys(feeds).filter((n) => n.startsWith('past_key_values.0.'))) out[name] = swapRows(feeds[name]!, 0, 1);
      return out;
    });
    try {
      const together = await Promise.all(JOBS.slice(0, 3).map((job) => run(fresh, job)));
      const wrong = together.filter((r, i) => r.tokens.join() !== solo[i]!.tokens.join());
      expect(wrong.length).toBeGreaterThanOrEqual(2);
      expect(wrong.some((r) => r.text.includes(CORRUPT_TEXT))).toBe(true);
      expect(fresh.backend.liveHandles).toBe(0);
    } finally {
      restore();
      await fresh.release();
    }
  });

  it('fails every row of a step that fails, releases every cache and keeps working', async () => {
    let steps = 0;
    const restore = tamperStep(engine, (feeds) => {
      if (++steps === 3) throw new Error('step failed on purpose');
      return feeds;
    });
    const outcomes = await Promise.allSettled(JOBS.slice(0, 3).map((job) => run(engine, job)));
    restore();
    for (const o of outcomes) expect(o).toMatchObject({ status: 'rejected', reason: { message: 'step failed on purpose' } });
    expect(engine.backend.liveHandles).toBe(0);
    expect((await run(engine, JOBS[2]!)).tokens).toEqual(solo[2]!.tokens);
  });
});

describe('graphs that cannot batch decode one sequence at a time', () => {
  it('batch1: a fixed batch of one is read at load, said once, and concurrent calls queue', async () => {
    const info: string[] = [];
    const engine = await load('batch1', { logger: { warn: () => {}, info: (m) => info.push(m) } });
    try {
      expect(engine.batching).toMatchObject({ dynamic: false, maxBatch: 1, reason: expect.stringMatching(/fixed batch of 1/) });
      // said once (the small fixture's attention, kept as exported, is said too)
      expect(info.filter((m) => /one sequence at a time/.test(m))).toEqual([expect.stringMatching(/^decoding one sequence at a time per worker: .*fixed batch of 1/)]);
      const jobs = JOBS.slice(0, 3);
      const one = await alone(engine, jobs);
      const finished: number[] = [];
      let cancel = false;
      const together = await Promise.all(
        [...jobs, JOBS[3]!].map((job, i) =>
          run(engine, job, i === 3 ? { shouldStop: () => cancel } : i === 0 ? { shouldStop: () => ((cancel = true), false) } : {}).then((r) => {
            finished.push(i);
            return r;
          }),
        ),
      );
      together.slice(0, 3).forEach((r, i) => {
        expect(r.tokens).toEqual(one[i]!.tokens);
        expect(r.timings.stepRows).toBe(r.timings.steps);
      });
      // Cancelled while the others held the one row: it ends at once, without a prefill.
      expect(together[3]).toMatchObject({ cancelled: true, tokens: [] });
      expect(together[3]!.timings.prefillMs).toBe(0);
      expect(finished[0]).toBe(3);
      expect(engine.backend.liveHandles).toBe(0);
    } finally {
      await engine.release();
    }
  });

  it('input-ids: a step graph without an attention mask', async () => {
    const engine = await load('input-ids');
    try {
      expect(engine.batching).toMatchObject({ dynamic: false, maxBatch: 1, reason: expect.stringMatching(/no attention mask/) });
    } finally {
      await engine.release();
    }
  });
});

describe('streamed text while rows decode together', () => {
  it('adds up to the final, repaired text of each row (repeats variant)', async () => {
    const engine = await load('repeats');
    try {
      const jobs = JOBS.slice(0, 3);
      const deltas = jobs.map(() => [] as string[]);
      const results = await Promise.all(jobs.map((job, i) => run(engine, job, { maxNewTokens: 300, onDelta: (d) => deltas[i]!.push(d) })));
      results.forEach((r, i) => {
        expect(r.rawText).toContain(REPEATED_TEXT.repeat(25));
        expect(r.text).not.toContain(REPEATED_TEXT.repeat(2));
        expect(deltas[i]!.length).toBeGreaterThan(2);
        expect(deltas[i]!.join('')).toBe(r.text);
      });
    } finally {
      await engine.release();
    }
  });
});
