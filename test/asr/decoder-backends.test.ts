import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import type { PrefillInput } from '../../src/asr/backend.js';
import { AsrEngine, type BackendSetting } from '../../src/asr/engine.js';
import { AsrProcessor } from '../../src/asr/processor.js';
import { StageLock } from '../../src/asr/stage-lock.js';
import { decodeAlone } from '../support/decode-alone.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';
import { useLavapipe } from '../support/webgpu.js';

// the webgpu backend runs on Mesa's software Vulkan here
useLavapipe();

const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));

/** Each backend driven by hand, as a benchmark would: prompts from the processor, then steps and releases. */
describe.each<BackendSetting>(['host', 'webgpu'])('%s backend', (backend) => {
  let engine: AsrEngine;
  let prompts: PrefillInput[];

  beforeAll(async () => {
    engine = await AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cpu', backend, logger: { warn: () => {} }, maxBatch: 3 });
    const processor = new AsrProcessor(engine.sessions.encoder, engine.encoderContract, engine.tokenizer, new StageLock());
    prompts = await Promise.all(['noise', 'echo', 'mixed'].map(async (name) => (await processor.process(clip(name), {})).prompt));
  });
  afterAll(() => engine.release());

  /** Greedy ids of each prompt decoded alone for n steps, one prompt after the other. */
  const eachAlone = async (n: number) => {
    const out: number[][] = [];
    for (const p of prompts) out.push(await decodeAlone(engine.backend, p, n));
    return out;
  };

  it('prefills several prompts into handles that step together, in any order, and counts live handles', async () => {
    const b = engine.backend;
    const expected = await eachAlone(6);
    const { sequences } = await b.prefill(prompts);
    expect(b.liveHandles).toBe(3);
    expect(sequences.map((s) => s.cache.length)).toEqual(prompts.map((p) => p.ids.length));
    const ids = sequences.map((s) => [s.firstId]);
    for (let i = 0; i < 6; i++) {
      // A different row order every step: ids come back in the order asked.
      const order = i % 2 ? [2, 0, 1] : [1, 2, 0];
      const { ids: next, runMs } = await b.step(order.map((r) => ({ cache: sequences[r]!.cache, token: ids[r]!.at(-1)! })));
      expect(runMs).toBeGreaterThan(0);
      order.forEach((r, k) => ids[r]!.push(next[k]!));
    }
    expect(ids).toEqual(expected);
    expect(sequences.map((s) => s.cache.length)).toEqual(prompts.map((p) => p.ids.length + 6));
    for (const s of sequences) b.release(s.cache);
    expect(b.liveHandles).toBe(0);
  });

  it('lets a row leave mid-batch and another join with a longer prompt, each as alone', async () => {
    const b = engine.backend;
    const expected = await eachAlone(8);
    const [short, , long] = [...prompts].sort((x, y) => x.ids.length - y.ids.length);
    const { sequences: first } = await b.prefill([short!, prompts[1]!]);
    const rows = first.map((s) => ({ cache: s.cache, ids: [s.firstId] }));
    const stepAll = async () => {
      const { ids } = await b.step(rows.map((r) => ({ cache: r.cache, token: r.ids.at(-1)! })));
      rows.forEach((r, i) => r.ids.push(ids[i]!));
    };
    await stepAll();
    await stepAll();
    // The first leaves; a longer prompt joins (the batch is laid out again).
    const left = rows.shift()!;
    b.release(left.cache);
    const { sequences: joined } = await b.prefill([long!]);
    rows.push({ cache: joined[0]!.cache, ids: [joined[0]!.firstId] });
    for (let i = 0; i < 5; i++) await stepAll();
    // The middle one leaves too; the joined row goes on alone.
    const middle = rows.shift()!;
    b.release(middle.cache);
    for (let i = 0; i < 2; i++) await stepAll();
    const expectedOf = (p: PrefillInput) => expected[prompts.indexOf(p)]!;
    expect(left.ids).toEqual(expectedOf(short!).slice(0, 3));
    expect(middle.ids).toEqual(expectedOf(prompts[1]!).slice(0, 8));
    expect(rows[0]!.ids).toEqual(expectedOf(long!).slice(0, 8));
    for (const r of rows) b.release(r.cache);
    expect(b.liveHandles).toBe(0);
  });

  it('refuses a released handle and releases a handle only once', async () => {
    const b = engine.backend;
    const { sequences } = await b.prefill([prompts[0]!]);
    const { cache } = sequences[0]!;
    b.release(cache);
    b.release(cache);
    expect(b.liveHandles).toBe(0);
    await expect(b.step([{ cache, token: 1 }])).rejects.toThrow(/released cache handle/);
    // A row left out of a step has left the batch for good.
    const { sequences: two } = await b.prefill(prompts.slice(0, 2));
    await b.step(two.map((s) => ({ cache: s.cache, token: s.firstId })));
    await b.step([{ cache: two[1]!.cache, token: 1 }]);
    await expect(b.step([{ cache: two[0]!.cache, token: 1 }])).rejects.toThrow(/left the batch/);
    for (const s of two) b.release(s.cache);
    expect(b.liveHandles).toBe(0);
    await expect(b.step([{ cache: { length: 5 }, token: 1 }])).rejects.toThrow(/another backend/);
    await expect(b.step([])).rejects.toThrow(/1 to 3 rows/);
  });
});
