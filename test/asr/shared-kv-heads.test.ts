import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { rewriteGraph } from '../../src/asr/lean-graph.js';
import { GRAPH_NODE, int64Values, readModel, readNode } from '../../src/asr/onnx-model.js';
import { concat, intField, parseMessage } from '../../src/asr/onnx-proto.js';
import { withSharedKvHeads } from '../../src/asr/shared-kv-heads.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { symmetric } from '../../tools/random.js';
import { exportedAndLean } from '../support/engines.js';
import { fixtureModel } from '../support/fixture-models.js';
import { asFloat32, feedsFor, relativeRms } from '../support/onnx-feeds.js';

const scratch = mkdtempSync(join(tmpdir(), 'shared-kv-heads-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(scratch, `cache-${dirs++}`);

const opTypes = (bytes: Uint8Array) =>
  readModel(bytes)
    .graph.filter((f) => f.n === GRAPH_NODE)
    .map((f) => readNode(f).opType);
const countOf = (ops: string[], op: string) => ops.filter((o) => o === op).length;

describe('attention reading each KV head once', () => {
  // The full-size stand-in's topology at toy widths: 4 query heads over 2 KV heads, repeated as transformers does.
  const model = mkdtempSync(join(scratch, 'toy-full-size-'));
  writeFullSizeModel(model, { batch: 'dynamic', kv: 'float16', seed: 13, dims: TOY_DIMS });
  const file = (role: 'prefill' | 'step') => join(model, FIXTURE_FILES[role]);

  it('rewrites both attention matmuls of every layer and drops the repeats', () => {
    for (const role of ['prefill', 'step'] as const) {
      const exported = readFileSync(file(role));
      const before = opTypes(exported);
      // 2 layers x (keys, values)
      expect(countOf(before, 'Expand')).toBe(4);
      const shared = withSharedKvHeads(exported);
      expect(shared.count).toBe(4);
      expect(shared.reason).toBeUndefined();
      const after = opTypes(shared.bytes);
      expect(countOf(after, 'Expand')).toBe(0);
      expect(countOf(after, 'MatMul')).toBe(countOf(before, 'MatMul'));
      // per matmul: two reshapes added, the repeat's reshape dropped; the keys' transpose is kept, now unrepeated
      expect(countOf(after, 'Reshape')).toBe(countOf(before, 'Reshape') + 4);
      expect(countOf(after, 'Transpose')).toBe(countOf(before, 'Transpose'));
    }
  });

  it('computes what the exported graph computes: logits and cache, over left-padded rows, prefill and step', async () => {
    for (const [role, seq, past] of [
      ['prefill', 6, 0],
      ['step', 1, 7],
    ] as const) {
      const lean = await rewriteGraph(file(role), { sharedKvHeads: true }, { cacheDir: freshDir() });
      expect(lean).toMatchObject({ rewritten: true, sharedKvHeads: 4, greedy: false, int8Matmuls: 0 });
      const [exported, shared] = await Promise.all([
        InferenceSession.create(file(role), { logSeverityLevel: 3 }),
        InferenceSession.create(lean.file, { logSeverityLevel: 3, ...lean.sessionOptions }),
      ]);
      try {
        const feeds = feedsFor(exported, 3, seq, past, 21);
        // rows 0 and 2 left-padded by 3 and 1 columns
        const mask = feeds.attention_mask!.data as BigInt64Array;
        const total = seq + past;
        mask.fill(0n, 0, 3);
        mask.fill(0n, 2 * total, 2 * total + 1);
        const [a, b] = await Promise.all([shared.run(feeds), exported.run(feeds)]);
        expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
        for (const name of Object.keys(b)) {
          const [x, y] = [asFloat32(a[name] as Tensor), asFloat32(b[name] as Tensor)];
          expect(x.length).toBe(y.length);
          // layer 0's cache comes before any attention: bit for bit; what follows an attention (later layers' cache,
          // the logits) within the float rounding of a matmul kernel blocking the same sums differently
          if (name.startsWith('present.0.')) expect(Buffer.compare(Buffer.from(x.buffer), Buffer.from(y.buffer))).toBe(0);
          else expect(relativeRms(x, y)).toBeLessThan(1e-5);
        }
      } finally {
        await Promise.all([exported.release(), shared.release()]);
      }
    }
  });

  it('the engine decodes with it by default: the same tokens as the exported graphs, in a batch of ragged rows', async () => {
    const { exported, lean, said } = await exportedAndLean(model);
    try {
      // both decoders rewritten (a graph kept as exported is logged)
      expect(said.filter((m) => /attention kept as exported|kept with its logits/.test(m))).toEqual([]);
      const clips = [440, 620, 910].map((hz, i) => Float32Array.from({ length: 16000 * (1 + i) }, (_, t) => 0.3 * Math.sin((2 * Math.PI * hz * t) / 16000)));
      const budget = { maxNewTokens: 24, language: 'English' } as const;
      const alone: number[][] = [];
      for (const pcm of clips) alone.push((await exported.transcribeChunk(pcm, budget)).tokens);
      expect(new Set(alone.map((t) => t.join())).size).toBe(3);
      const batched = await Promise.all(clips.map((pcm) => lean.transcribeChunk(pcm, budget)));
      expect(batched.map((r) => r.tokens)).toEqual(alone);
      // rows of different prompt lengths shared their steps
      for (const r of batched) expect(r.timings.stepRows).toBeGreaterThan(r.timings.steps);
    } finally {
      await Promise.all([exported.release(), lean.release()]);
    }
  });

  it('leaves a graph without repeated KV heads as it is and says why', async () => {
    const step = join(fixtureModel('default'), FIXTURE_FILES.step);
    const bytes = readFileSync(step);
    const kept = withSharedKvHeads(bytes);
    expect(kept.count).toBe(0);
    expect(kept.bytes).toBe(bytes);
    expect(kept.reason).toMatch(/no attention matmul reads KV heads repeated/);
    const lean = await rewriteGraph(step, { sharedKvHeads: true }, { cacheDir: freshDir() });
    expect(lean).toMatchObject({ file: step, rewritten: false, sharedKvHeads: 0 });
    expect(lean.reason).toMatch(/no attention matmul reads KV heads repeated/);
  });
});

describe('which repeats it matches', () => {
  const [B, KV_HEADS, GROUP, S, L, D] = [2, 2, 3, 2, 5, 4];
  const HEADS = KV_HEADS * GROUP;

  interface Attention {
    shapes: 'initializers' | 'constant nodes' | 'constant ints' | 'computed';
    /** the keys' transpose before the first matmul */
    perm?: number[];
    /** where the repeat inserts its axis and expands it: 2 gives head k*g + r, 1 would give r*kvH + k */
    axis?: 1 | 2;
    allowzero?: 1;
    /** the head count the repeat reshapes to */
    heads?: number;
    /** the query's head count ([B, 1, S, D] broadcasts over the heads) */
    queryHeads?: number;
    opset?: number;
  }

  /** q @ repeat(k)^T, softmax, @ repeat(v): one attention with its repeat written as `a` says. */
  function attention(a: Attention): string {
    const { axis = 2, heads = HEADS, queryHeads = HEADS } = a;
    const g = new GraphBuilder('attention');
    const constant = (values: number[]) =>
      a.shapes === 'initializers'
        ? g.i64(values)
        : a.shapes === 'constant ints'
          ? g.op('Constant', [], { value_ints: values })
          : g.op('Constant', [], { value: { tensor: { type: 'int64', dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) } } });
    const q = g.input('q', 'float32', [B, queryHeads, S, D]);
    const k = g.input('k', 'float32', [B, KV_HEADS, L, D]);
    const v = g.input('v', 'float32', [B, KV_HEADS, L, D]);
    const repeat = (t: string) => {
      const unsqueezed = g.op('Unsqueeze', [t, constant([axis])]);
      const by = axis === 2 ? [1, 1, GROUP, 1, 1] : [1, GROUP, 1, 1, 1];
      // computed: the Expand shape comes from the tensor's own shape at run time, as a dynamic torch export writes it
      const expanded = g.op('Expand', [unsqueezed, a.shapes === 'computed' ? g.op('Mul', [g.op('Shape', [unsqueezed]), g.i64(by)]) : constant(by)]);
      return g.op('Reshape', [expanded, constant([0, heads, -1, D])], a.allowzero ? { allowzero: 1 } : {});
    };
    const perm = a.perm ?? [0, 1, 3, 2];
    const scores = g.op('MatMul', [q, g.op('Transpose', [repeat(k)], { perm })]);
    const probs = g.op('Softmax', [scores], { axis: -1 });
    g.output('out', 'float32', [B, HEADS, S, D], g.op('MatMul', [probs, repeat(v)]));
    const { model } = g.build('attention.onnx.data', a.opset);
    const path = join(scratch, `attention-${dirs++}.onnx`);
    writeFileSync(path, model);
    return path;
  }

  async function run(model: string | Uint8Array, queryHeads = HEADS): Promise<Float32Array> {
    const random = symmetric(3);
    const tensor = (dims: number[]) => new Tensor('float32', Float32Array.from({ length: dims.reduce((x, y) => x * y) }, random), dims);
    const feeds = { q: tensor([B, queryHeads, S, D]), k: tensor([B, KV_HEADS, L, D]), v: tensor([B, KV_HEADS, L, D]) };
    const session = typeof model === 'string' ? await InferenceSession.create(model) : await InferenceSession.create(model);
    try {
      return (await session.run(feeds)).out!.data as Float32Array;
    } finally {
      await session.release();
    }
  }

  for (const shapes of ['initializers', 'constant nodes', 'constant ints'] as const) {
    it(`constant shapes as ${shapes}: both matmuls, the same result`, async () => {
      const path = attention({ shapes });
      const shared = withSharedKvHeads(readFileSync(path));
      expect(shared.count).toBe(2);
      const ops = opTypes(shared.bytes);
      expect(countOf(ops, 'Expand')).toBe(0);
      // nothing of the repeats left, their shape constants included
      expect(countOf(ops, 'Unsqueeze')).toBe(0);
      expect(countOf(ops, 'Constant')).toBe(0);
      const [exported, rewritten] = await Promise.all([run(path), run(shared.bytes)]);
      expect(relativeRms(rewritten, exported)).toBeLessThan(1e-6);
    });
  }

  it('leaves alone what it cannot prove is the same: computed shapes, other transposes, other head orders, allowzero, old opsets', () => {
    const count = (a: Attention) => withSharedKvHeads(readFileSync(attention(a))).count;
    expect(count({ shapes: 'computed' })).toBe(0);
    // keys transposed [0, 1, 2, 3] (no-op): only the values' matmul matches
    expect(count({ shapes: 'initializers', perm: [0, 1, 2, 3] })).toBe(1);
    // heads repeated at axis 1 (head r*kvH + k, as torch's repeat would order them): a different pairing of heads
    expect(count({ shapes: 'initializers', axis: 1 })).toBe(0);
    expect(count({ shapes: 'initializers', allowzero: 1 })).toBe(0);
    // a head count that is not a multiple of the group
    expect(count({ shapes: 'initializers', heads: HEADS + 1 })).toBe(0);
    const old = withSharedKvHeads(readFileSync(attention({ shapes: 'initializers', opset: 12 })));
    expect(old).toMatchObject({ count: 0, reason: expect.stringMatching(/opset 12/) });
  });

  it('a query that broadcasts over the heads fails when run, never computes something else', async () => {
    const path = attention({ shapes: 'initializers', queryHeads: 1 });
    const shared = withSharedKvHeads(readFileSync(path));
    // it matches (the query's head count is not in the graph) ...
    expect(shared.count).toBe(2);
    expect((await run(path, 1)).length).toBe(B * HEADS * S * D);
    // ... but the reshape reads S and D from the query itself, so it refuses one of the wrong size
    await expect(run(shared.bytes, 1)).rejects.toThrow(/reshape|shape/i);
  });

  it('reads int64 constants stored as int64_data, negative values included', () => {
    const { onnx } = onnxProto;
    const packed = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.INT64, dims: [4], int64Data: [0, 6, -1, 4] }).finish();
    expect(int64Values(parseMessage(packed))).toEqual([0, 6, -1, 4]);
    const raw = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.INT64, dims: [2], rawData: new Uint8Array(BigInt64Array.from([-3n, 2n]).buffer) }).finish();
    expect(int64Values(parseMessage(raw))).toEqual([-3, 2]);
    // unpacked, as proto2 writers (onnx's own) write it: one varint field per value, -1 as ten bytes
    const unpacked = concat([intField(1, 3), intField(2, onnx.TensorProto.DataType.INT64), ...[0, -1, 128].map((v) => intField(7, v))]);
    expect(int64Values(parseMessage(unpacked))).toEqual([0, -1, 128]);
    const floats = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.FLOAT, dims: [1], floatData: [1] }).finish();
    expect(int64Values(parseMessage(floats))).toBeUndefined();
  });
});
