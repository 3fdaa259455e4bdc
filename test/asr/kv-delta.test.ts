import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { AsrEngine } from '../../src/asr/engine.js';
import { withKvDelta } from '../../src/asr/kv-delta.js';
import { rewriteGraph } from '../../src/asr/lean-graph.js';
import { GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT, initializerInfo, node, readModel, readNode, tensorInfo, writeModel } from '../../src/asr/onnx-model.js';
import { bytesField, concat } from '../../src/asr/onnx-proto.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { symmetric } from '../../tools/random.js';
import { exportedAndLean } from '../support/engines.js';
import { fixtureModel } from '../support/fixture-models.js';
import { asFloat32, feedsFor, relativeRms } from '../support/onnx-feeds.js';

const scratch = mkdtempSync(join(tmpdir(), 'kv-delta-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(scratch, `cache-${dirs++}`);

const graphOf = (bytes: Uint8Array) => {
  const model = readModel(bytes);
  return {
    nodes: model.graph.filter((f) => f.n === GRAPH_NODE).map(readNode),
    inputs: model.graph.filter((f) => f.n === GRAPH_INPUT).map(tensorInfo),
    outputs: model.graph.filter((f) => f.n === GRAPH_OUTPUT).map(tensorInfo),
  };
};

describe('a step that returns only the new cache column', () => {
  // The full-size stand-in's topology at toy widths (2 layers, 4 query heads over 2 KV heads, fp16 cache).
  const model = mkdtempSync(join(scratch, 'toy-full-size-'));
  writeFullSizeModel(model, { batch: 'dynamic', kv: 'float16', seed: 29, dims: TOY_DIMS });
  const step = join(model, FIXTURE_FILES.step);

  it('returns each layer new key/value column, and no node concatenates a past input any more', async () => {
    const lean = await rewriteGraph(step, { sharedKvHeads: true, kvDelta: true }, { cacheDir: freshDir() });
    expect(lean).toMatchObject({ rewritten: true, sharedKvHeads: 4, kvDelta: 4 });
    expect(lean.kvDeltaReason).toBeUndefined();
    const { nodes, inputs, outputs } = graphOf(readFileSync(lean.file));
    const past = new Set(inputs.filter((i) => /past/.test(i.name)).map((i) => i.name));
    expect(past.size).toBe(4);
    expect(nodes.filter((n) => n.opType === 'Concat' && n.inputs.some((i) => past.has(i)))).toEqual([]);
    for (const o of outputs.filter((o) => /present/.test(o.name))) expect(o.shape[2]).toBe('new_sequence_length');
  });

  it('computes what the exported step computes, with masked columns after the rows and left padding', async () => {
    const options = { intraOpNumThreads: 1, graphOptimizationLevel: 'all' } as const;
    const whole = await rewriteGraph(step, { sharedKvHeads: true }, { cacheDir: freshDir() });
    const delta = await rewriteGraph(step, { sharedKvHeads: true, kvDelta: true }, { cacheDir: freshDir() });
    const [a, b] = await Promise.all([
      InferenceSession.create(whole.file, { ...options, ...whole.sessionOptions }),
      InferenceSession.create(delta.file, { ...options, ...delta.sessionOptions }),
    ]);
    try {
      const [B, P, ROOM] = [3, 7, 5];
      const feeds = feedsFor(a, B, 1, P, 3);
      // rows 1 and 2 left-padded by 2 and 5 columns
      const mask = new BigInt64Array(B * (P + 1)).fill(1n);
      mask.fill(0n, P + 1, P + 1 + 2);
      mask.fill(0n, 2 * (P + 1), 2 * (P + 1) + 5);
      feeds.attention_mask = new Tensor('int64', mask, [B, P + 1]);
      // The same rows with ROOM more columns after them: random values, masked out.
      const random = symmetric(5);
      const C = P + ROOM;
      const wide: Record<string, Tensor> = { ...feeds };
      const wideMask = new BigInt64Array(B * (C + 1));
      for (let row = 0; row < B; row++) {
        wideMask.set(mask.subarray(row * (P + 1), row * (P + 1) + P), row * (C + 1));
        wideMask[row * (C + 1) + C] = 1n;
      }
      wide.attention_mask = new Tensor('int64', wideMask, [B, C + 1]);
      const [, heads, , headDim] = feeds['past_key_values.0.key']!.dims as number[];
      for (const name of Object.keys(feeds).filter((n) => /past/.test(n))) {
        const from = feeds[name]!.data as Uint16Array;
        const to = Uint16Array.from({ length: B * heads! * C * headDim! }, () => 0x3c00 | Math.floor(((random() + 1) / 2) * 1023));
        for (let r = 0; r < B * heads!; r++) to.set(from.subarray(r * P * headDim!, (r + 1) * P * headDim!), r * C * headDim!);
        wide[name] = new Tensor('float16', to, [B, heads!, C, headDim!]);
      }
      const [exported, rewritten] = [await a.run(feeds), await b.run(wide)];
      expect(relativeRms(asFloat32(rewritten.logits!), asFloat32(exported.logits!))).toBeLessThan(1e-5);
      for (const name of a.outputNames.filter((n) => /present/.test(n))) {
        const full = asFloat32(exported[name]!);
        const column = asFloat32(rewritten[name]!);
        expect(rewritten[name]!.dims).toEqual([B, heads, 1, headDim]);
        const last = new Float32Array(column.length);
        for (let r = 0; r < B * heads!; r++) last.set(full.subarray((r * (P + 1) + P) * headDim!, (r * (P + 1) + P + 1) * headDim!), r * headDim!);
        // layer 0's new column does not depend on attention: bit for bit; layer 1's reads layer 0's attention
        expect(relativeRms(column, last)).toBeLessThan(name.includes('.0.') ? 1e-12 : 1e-3);
      }
    } finally {
      await Promise.all([a.release(), b.release()]);
    }
  });

  it('the engine decodes with it by default: the same tokens as the exported graphs, rows joining mid-decode, past its room, the cache held as float32', async () => {
    const { exported, lean, said } = await exportedAndLean(model);
    try {
      // rewritten, and the load-time probe found the masked room ignored
      expect(said.filter((m) => /as exported|kept with its logits|masked columns|keeps its float16 cache/.test(m))).toEqual([]);
      // on the CPU the step holds the float16 cache as float32 (float32-cache.ts): prefilled rows are widened as they join
      expect([exported.stepContract.kvType, lean.stepContract.kvType]).toEqual(['float16', 'float32']);
      const clips = [440, 620, 910].map((hz, i) => Float32Array.from({ length: 16000 * (1 + i) }, (_, t) => 0.3 * Math.sin((2 * Math.PI * hz * t) / 16000)));
      // more steps than the layout's room (32 columns): the batch is laid out again while it decodes
      const budget = { maxNewTokens: 45, language: 'English' } as const;
      const alone: number[][] = [];
      for (const pcm of clips) alone.push((await exported.transcribeChunk(pcm, budget)).tokens);
      expect(new Set(alone.map((t) => t.join())).size).toBe(3);
      expect(alone.every((t) => t.length > 40)).toBe(true);
      // the third row joins once the first has streamed some text
      let joined: Promise<Awaited<ReturnType<AsrEngine['transcribeChunk']>>> | undefined;
      let deltas = 0;
      const first = lean.transcribeChunk(clips[0]!, {
        ...budget,
        onDelta: () => {
          if (++deltas === 8) joined = lean.transcribeChunk(clips[2]!, budget);
        },
      });
      const second = lean.transcribeChunk(clips[1]!, budget);
      const [r0, r1] = await Promise.all([first, second]);
      const r2 = await joined!;
      expect([r0, r1, r2].map((r) => r.tokens)).toEqual(alone);
      for (const r of [r0, r1, r2]) expect(r.timings.stepRows).toBeGreaterThan(r.timings.steps);
      // CPU_FLOAT32_CACHE=false: the same layout over the cache as exported, fp16
      const half = await AsrEngine.load({ modelDir: model, device: 'cpu', intraOpThreads: 1, cpuInt8Matmuls: false, cpuFloat32Cache: false });
      try {
        expect(half.stepContract.kvType).toBe('float16');
        expect((await half.transcribeChunk(clips[1]!, budget)).tokens).toEqual(alone[1]);
      } finally {
        await half.release();
      }
    } finally {
      await Promise.all([exported.release(), lean.release()]);
    }
  });

  it('keeps the whole cache when the step takes a mask but does not apply it: the probe at load notices', async () => {
    // the toy stand-in with its step's mask replaced by all-true before attention
    const dir = mkdtempSync(join(scratch, 'mask-ignored-'));
    cpSync(model, dir, { recursive: true });
    const stepModel = readModel(readFileSync(join(dir, FIXTURE_FILES.step)));
    let replaced = 0;
    const graph = stepModel.graph.map((f) => {
      const n = f.n === GRAPH_NODE ? readNode(f) : undefined;
      if (n?.opType !== 'Cast' || n.inputs[0] !== 'attention_mask') return f.raw;
      replaced++;
      const zeros = 'test/mask_zeros';
      return concat([
        bytesField(GRAPH_NODE, node('Sub', zeros, ['attention_mask', 'attention_mask'], [zeros])),
        bytesField(GRAPH_NODE, node('Equal', 'test/all_true', [zeros, zeros], n.outputs)),
      ]);
    });
    expect(replaced).toBe(1);
    writeFileSync(join(dir, FIXTURE_FILES.step), writeModel(stepModel, graph));

    const { exported, lean, said } = await exportedAndLean(dir);
    try {
      expect(said.filter((m) => /cannot skip the masked columns after its rows \(its layer 1 column moves by .* its attention mask is not applied there\); it returns its whole cache instead/.test(m))).toHaveLength(1);
      // the reloaded step decodes; its tokens alone would not tell the layouts apart (zero room moves this toy's
      // argmax too little), the log line above is what shows the probe noticed
      const pcm = Float32Array.from({ length: 16000 }, (_, t) => 0.3 * Math.sin((2 * Math.PI * 520 * t) / 16000));
      const budget = { maxNewTokens: 12, language: 'English' } as const;
      expect((await lean.transcribeChunk(pcm, budget)).tokens).toEqual((await exported.transcribeChunk(pcm, budget)).tokens);
    } finally {
      await Promise.all([exported.release(), lean.release()]);
    }
  });
});

describe('which caches it rewrites', () => {
  it('leaves a step whose attention reads no cache through a matmul (the small fixture) as it is', () => {
    const bytes = readFileSync(join(fixtureModel('default'), FIXTURE_FILES.step));
    const kept = withKvDelta(bytes);
    expect(kept).toMatchObject({ bytes, count: 0 });
    expect(kept.reason).toMatch(/no attention matmul reads present\.0\.key through Casts and a Transpose/);
  });

  it('leaves a step without an attention mask as it is, and the engine says so', async () => {
    const dir = fixtureModel('input-ids');
    const kept = await rewriteGraph(join(dir, FIXTURE_FILES.step), { greedy: 'step', kvDelta: true }, { cacheDir: freshDir() });
    expect(kept).toMatchObject({ greedy: true, kvDelta: 0 });
    expect(kept.kvDeltaReason).toMatch(/it takes no attention mask/);
    const said: string[] = [];
    const engine = await AsrEngine.load({ modelDir: dir, device: 'cpu', intraOpThreads: 1, logger: { info: (m: string) => said.push(m), warn: (m: string) => said.push(m) } });
    await engine.release();
    expect(said.filter((m) => /each step returns the whole cache as exported \(it takes no attention mask/.test(m))).toHaveLength(1);
  });

  /** scores over a cache of one layer's keys */
  function cacheGraph(o: { axis?: number; fromInput?: boolean; opset?: number; wholeReader?: boolean; valuesSummed?: boolean }): Uint8Array {
    const g = new GraphBuilder('cache');

    const past = g.input('past_key_values.0.key', 'float32', ['b', 2, 'p', 4]);
    const fresh = g.op('Mul', [g.input('new', 'float32', ['b', 2, 1, 4]), g.f32([2], [])]);
    const present = o.fromInput === false ? g.op('Concat', [fresh, past], { axis: o.axis ?? 2 }) : g.op('Concat', [past, fresh], { axis: o.axis ?? 2 });
    const q = g.input('q', 'float32', ['b', 2, 1, 4]);
    // [b, 2, t]: the engine reads every 4-D float output as a cache
    const scores = g.op('MatMul', [q, g.op('Transpose', [present], { perm: [0, 1, 3, 2] })]);
    g.output('scores', 'float32', ['b', 2, 't'], g.op('Squeeze', [scores, g.i64([2])]));
    if (o.wholeReader) g.output('total', 'float32', ['b'], g.op('ReduceSum', [present, g.i64([1, 2, 3])], { keepdims: 0 }));
    if (o.valuesSummed) {
      // a second cache that only a sum reads: no matmul to split
      const values = g.op('Concat', [g.input('past_key_values.0.value', 'float32', ['b', 2, 'p', 4]), fresh], { axis: 2 });
      g.output('value_total', 'float32', ['b'], g.op('ReduceSum', [values, g.i64([1, 2, 3])], { keepdims: 0 }));
      g.output('present.0.value', 'float32', ['b', 2, 't', 4], values);
    }
    g.output('present.0.key', 'float32', ['b', 2, 't', 4], present);
    return g.build('cache.data', o.opset).model;
  }

  it.each<[string, { axis?: number; wholeReader?: boolean }]>([
    ['axis 2', {}],
    ['axis -2', { axis: -2 }],
    ['another reader of the whole cache beside the matmul', { wholeReader: true }],
  ])('splits the scores of a Concat(past, new) on %s, and the numbers agree', async (_, o) => {
    const delta = withKvDelta(cacheGraph(o));
    expect(delta.count).toBe(1);
    // a reader of the whole cache keeps a concat of its own; otherwise none is left
    const concats = graphOf(delta.bytes).nodes.filter((n) => n.opType === 'Concat' && n.inputs.includes('past_key_values.0.key'));
    expect(concats.map((c) => c.outputs[0])).toEqual(o.wholeReader ? ['kv_delta/present.0.key/whole'] : []);
    const session = await InferenceSession.create(delta.bytes);
    try {
      const random = symmetric(11);
      const values = (n: number) => Float32Array.from({ length: n }, random);
      const [past, fresh, q] = [values(2 * 2 * 3 * 4), values(2 * 2 * 4), values(2 * 2 * 4)];
      const out = await session.run({
        'past_key_values.0.key': new Tensor('float32', past, [2, 2, 3, 4]),
        new: new Tensor('float32', fresh, [2, 2, 1, 4]),
        q: new Tensor('float32', q, [2, 2, 1, 4]),
      });
      expect(out['present.0.key']!.dims).toEqual([2, 2, 1, 4]);
      expect(Array.from(out['present.0.key']!.data as Float32Array)).toEqual(Array.from(fresh, (x) => Math.fround(x * 2)));
      if (o.wholeReader) expect((out.total!.data as Float32Array)[1]).toBeCloseTo(past.subarray(24).reduce((a, x) => a + x, 0) + fresh.subarray(8).reduce((a, x) => a + 2 * x, 0), 4);
      const scores = out.scores!.data as Float32Array;
      for (let r = 0; r < 4; r++) {
        for (let col = 0; col < 4; col++) {
          const key = col < 3 ? past.subarray((r * 3 + col) * 4, (r * 3 + col + 1) * 4) : fresh.subarray(r * 4, r * 4 + 4).map((x) => x * 2);
          const dot = key.reduce((sum, k, d) => sum + k * q[r * 4 + d]!, 0);
          expect(scores[r * 4 + col]).toBeCloseTo(dot, 5);
        }
      }
    } finally {
      await session.release();
    }
  });

  it('places what two matmuls share before both: one Cast read by the values matmul and, through a Transpose, the keys one', async () => {
    const g = new GraphBuilder('shared-cast');

    const past = g.input('past_key_values.0.key', 'float16', ['b', 2, 'p', 4]);
    const present = g.op('Concat', [past, g.input('new', 'float16', ['b', 2, 1, 4])], { axis: 2 });
    const whole = g.op('Cast', [present], { to: 1 });
    // the Transpose comes first among the Cast's readers, its matmul last in the graph
    const transposed = g.op('Transpose', [whole], { perm: [0, 1, 3, 2] });
    const values = g.op('MatMul', [g.input('weights', 'float32', ['b', 2, 1, 't']), whole]);
    const scores = g.op('MatMul', [g.input('q', 'float32', ['b', 2, 1, 4]), transposed]);
    g.output('values', 'float32', ['b', 2, 4], g.op('Squeeze', [values, g.i64([2])]));
    g.output('scores', 'float32', ['b', 2, 't'], g.op('Squeeze', [scores, g.i64([2])]));
    g.output('present.0.key', 'float16', ['b', 2, 't', 4], present);
    const exported = g.build('shared.data').model;
    const delta = withKvDelta(exported);
    expect(delta.count).toBe(1);
    // every node after what it reads (ONNX's order, which the rewrite's own bookkeeping relies on)
    const model = readModel(delta.bytes);
    const defined = new Set([...graphOf(delta.bytes).inputs.map((i) => i.name), ...model.graph.filter((f) => f.n === GRAPH_INITIALIZER).map((f) => initializerInfo(f).name)]);
    for (const n of graphOf(delta.bytes).nodes) {
      for (const i of n.inputs) expect(defined.has(i), `${n.opType} ${n.name} reads ${i} before it is made`).toBe(true);
      for (const o of n.outputs) defined.add(o);
    }
    const random = symmetric(17);
    const half = (n: number) => Uint16Array.from({ length: n }, () => (random() < 0 ? 0x8000 : 0) | 0x3800 | Math.floor(((random() + 1) / 2) * 1023));
    const feeds = {
      'past_key_values.0.key': new Tensor('float16', half(2 * 2 * 3 * 4), [2, 2, 3, 4]),
      new: new Tensor('float16', half(2 * 2 * 4), [2, 2, 1, 4]),
      weights: new Tensor('float32', Float32Array.from({ length: 2 * 2 * 4 }, random), [2, 2, 1, 4]),
      q: new Tensor('float32', Float32Array.from({ length: 2 * 2 * 4 }, random), [2, 2, 1, 4]),
    };
    const [a, b] = await Promise.all([InferenceSession.create(exported), InferenceSession.create(delta.bytes)]);
    try {
      const [want, got] = [await a.run(feeds), await b.run(feeds)];
      for (const name of ['values', 'scores']) {
        expect(got[name]!.dims).toEqual(want[name]!.dims);
        expect(relativeRms(got[name]!.data as Float32Array, want[name]!.data as Float32Array)).toBeLessThan(1e-6);
      }
    } finally {
      await Promise.all([a.release(), b.release()]);
    }
  });

  it.each([
    ['the new column first', { fromInput: false }, /present.0.key is not a past input concatenated with the new column on axis 2/],
    ['another axis', { axis: 3 }, /present.0.key is not a past input concatenated with the new column on axis 2/],
    ['opset 12', { opset: 12 }, /opset 12: the rewrite needs 13 or newer/],
    ['a cache only a sum reads beside one a matmul reads', { valuesSummed: true }, /no attention matmul reads present\.0\.value through/],
  ] as const)('leaves a graph with %s as it is and says why', (_, o, why) => {
    const bytes = cacheGraph(o);
    const kept = withKvDelta(bytes);
    expect(kept).toMatchObject({ bytes, count: 0 });
    expect(kept.reason).toMatch(why);
  });
});
