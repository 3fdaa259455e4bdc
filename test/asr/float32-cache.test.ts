import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { withFloat32Cache } from '../../src/asr/float32-cache.js';
import { rewriteGraph } from '../../src/asr/lean-graph.js';
import { GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT, GRAPH_VALUE_INFO, readModel, readNode, tensorInfo, valueInfo, writeModel } from '../../src/asr/onnx-model.js';
import { bytesField } from '../../src/asr/onnx-proto.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { asFloat32, feedsFor } from '../support/onnx-feeds.js';

const scratch = mkdtempSync(join(tmpdir(), 'float32-cache-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(scratch, `cache-${dirs++}`);

/** The full-size stand-in's topology at toy widths (2 layers, 2 KV heads), its step as the file says. */
function toyStep(o: { kv: 'float16' | 'float32'; stopAfter?: number }): string {
  const model = mkdtempSync(join(scratch, 'toy-full-size-'));
  writeFullSizeModel(model, { batch: 'dynamic', kv: o.kv, seed: 31, dims: TOY_DIMS, ...(o.stopAfter ? { stopAfter: o.stopAfter } : {}) });
  return join(model, FIXTURE_FILES.step);
}

const kvDeltaStep = { greedy: 'step', sharedKvHeads: true, kvDelta: true } as const;

describe('a step holding its float16 cache as float32', () => {
  it('takes and returns the cache as float32, and no Cast reads a past input', async () => {
    const lean = await rewriteGraph(toyStep({ kv: 'float16' }), { ...kvDeltaStep, float32Cache: true }, { cacheDir: freshDir() });
    expect(lean).toMatchObject({ rewritten: true, kvDelta: 4, float32Cache: 4 });
    expect(lean.float32CacheReason).toBeUndefined();
    const model = readModel(readFileSync(lean.file));
    const inputs = model.graph.filter((f) => f.n === GRAPH_INPUT).map(tensorInfo);
    const outputs = model.graph.filter((f) => f.n === GRAPH_OUTPUT).map(tensorInfo);
    const past = inputs.filter((i) => /past/.test(i.name));
    expect(past.map((i) => i.type)).toEqual(['float32', 'float32', 'float32', 'float32']);
    expect(outputs.filter((o) => /present/.test(o.name)).map((o) => o.type)).toEqual(['float32', 'float32', 'float32', 'float32']);
    const names = new Set(past.map((i) => i.name));
    const readers = model.graph.filter((f) => f.n === GRAPH_NODE).map(readNode).filter((n) => n.inputs.some((i) => names.has(i)));
    expect(readers.length).toBeGreaterThan(0);
    expect(readers.filter((n) => n.opType === 'Cast')).toEqual([]);
  });

  // With --stop-after the stand-in stores a flag in the first layer's keys and reads it back from the whole cache:
  // a Concat of the past that only Casts read, which the rewrite concatenates in float32 instead.
  for (const stopAfter of [undefined, 3]) {
    it(`computes exactly what the float16 step computes, over left padding${stopAfter ? ' (the step-counting stand-in)' : ''}`, async () => {
      const step = toyStep({ kv: 'float16', ...(stopAfter ? { stopAfter } : {}) });
      const half = await rewriteGraph(step, kvDeltaStep, { cacheDir: freshDir() });
      const wide = await rewriteGraph(step, { ...kvDeltaStep, float32Cache: true }, { cacheDir: freshDir() });
      expect([half.float32Cache, wide.float32Cache]).toEqual([0, 4]);
      const concatsPast = readModel(readFileSync(wide.file))
        .graph.filter((f) => f.n === GRAPH_NODE)
        .map(readNode)
        .filter((n) => n.opType === 'Concat' && n.inputs.includes('past_key_values.0.key'));
      expect(concatsPast.length).toBe(stopAfter ? 1 : 0);
      const options = { intraOpNumThreads: 1, graphOptimizationLevel: 'all' } as const;
      const [a, b] = await Promise.all([
        InferenceSession.create(half.file, { ...options, ...half.sessionOptions }),
        InferenceSession.create(wide.file, { ...options, ...wide.sessionOptions }),
      ]);
      try {
        const [B, P] = [3, 9];
        const feeds = feedsFor(a, B, 1, P, 7);
        // rows 1 and 2 left-padded by 3 and 6 columns
        const mask = new BigInt64Array(B * (P + 1)).fill(1n);
        mask.fill(0n, P + 1, P + 1 + 3);
        mask.fill(0n, 2 * (P + 1), 2 * (P + 1) + 6);
        feeds.attention_mask = new Tensor('int64', mask, [B, P + 1]);
        const widened: Record<string, Tensor> = { ...feeds };
        for (const name of Object.keys(feeds).filter((n) => /past/.test(n))) widened[name] = new Tensor('float32', asFloat32(feeds[name]!), feeds[name]!.dims);
        const [h, w] = [await a.run(feeds), await b.run(widened)];
        expect(w.greedy_ids!.data).toEqual(h.greedy_ids!.data);
        for (const name of a.outputNames.filter((n) => /present/.test(n))) {
          expect(w[name]!.type).toBe('float32');
          // the float16 step's own rounding, widened: bit for bit
          expect(w[name]!.data).toEqual(asFloat32(h[name]!));
        }
      } finally {
        await Promise.all([a.release(), b.release()]);
      }
    });
  }

  it('drops the value_info an exporter wrote for tensors whose type it changes, so the graph still loads', async () => {
    const half = await rewriteGraph(toyStep({ kv: 'float16' }), kvDeltaStep, { cacheDir: freshDir() });
    const model = readModel(readFileSync(half.file));
    const declared = model.graph
      .filter((f) => f.n === GRAPH_INPUT || f.n === GRAPH_OUTPUT)
      .map(tensorInfo)
      .filter((t) => /past|present/.test(t.name))
      .map((t) => bytesField(GRAPH_VALUE_INFO, valueInfo(t.name, t.type, t.shape)));
    const withInfo = writeModel(model, [...model.graph.map((f) => f.raw), ...declared]);
    const wide = withFloat32Cache(withInfo, half.file);
    expect(wide.count).toBe(4);
    expect(readModel(wide.bytes).graph.filter((f) => f.n === GRAPH_VALUE_INFO)).toEqual([]);
    const session = await InferenceSession.create(wide.bytes, { intraOpNumThreads: 1, ...half.sessionOptions });
    try {
      const out = await session.run(feedsFor(session, 2, 1, 5, 3));
      expect(out['present.0.key']!.type).toBe('float32');
    } finally {
      await session.release();
    }
  });

  it('leaves a step whose past is read otherwise, saying why; a float32 cache has nothing to widen', async () => {
    // returning its whole cache, the step concatenates the past into an output
    const whole = await rewriteGraph(toyStep({ kv: 'float16' }), { greedy: 'step', sharedKvHeads: true }, { cacheDir: freshDir() });
    const bytes = readFileSync(whole.file);
    const refused = withFloat32Cache(bytes, whole.file);
    expect(refused.count).toBe(0);
    expect(refused.bytes).toBe(bytes);
    expect(refused.reason).toMatch(/past_key_values\.0\.key is read by Concat .*not only cast to float32/);
    const single = await rewriteGraph(toyStep({ kv: 'float32' }), { ...kvDeltaStep, float32Cache: true }, { cacheDir: freshDir() });
    expect(single).toMatchObject({ kvDelta: 4, float32Cache: 0 });
    expect(single.float32CacheReason).toBeUndefined();
  });
});
