import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { AsrEngine } from '../../src/asr/engine.js';
import { rewriteGraph } from '../../src/asr/lean-graph.js';
import { GRAPH_NODE, int64Values, readModel, readNode } from '../../src/asr/onnx-model.js';
import { parseMessage } from '../../src/asr/onnx-proto.js';
import { withSharedKvHeads } from '../../src/asr/shared-kv-heads.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { symmetric } from '../../tools/random.js';
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
          // the cache is computed before attention: bit for bit; the logits within float rounding of a reordered sum
          if (name.startsWith('present')) expect(Buffer.compare(Buffer.from(x.buffer), Buffer.from(y.buffer))).toBe(0);
          else expect(relativeRms(x, y)).toBeLessThan(1e-5);
        }
      } finally {
        await Promise.all([exported.release(), shared.release()]);
      }
    }
  });

  it('the engine decodes with it by default: the same tokens as the exported graphs, in a batch of ragged rows', async () => {
    const options = { modelDir: model, device: 'cpu', intraOpThreads: 1, cpuInt8Matmuls: false } as const;
    const [exported, lean] = await Promise.all([AsrEngine.load({ ...options, leanGraphs: false }), AsrEngine.load(options)]);
    try {
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
  type Shapes = 'initializers' | 'constant nodes' | 'computed';

  /** q @ repeat(k)^T, softmax, @ repeat(v): one attention with its repeat shapes given as `shapes` says. */
  function attention(shapes: Shapes, perm = [0, 1, 3, 2]): string {
    const g = new GraphBuilder('attention');
    const constant = (values: number[]) =>
      shapes === 'initializers'
        ? g.i64(values)
        : g.op('Constant', [], { value: { tensor: { type: 'int64', dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) } } });
    const q = g.input('q', 'float32', [B, HEADS, S, D]);
    const k = g.input('k', 'float32', [B, KV_HEADS, L, D]);
    const v = g.input('v', 'float32', [B, KV_HEADS, L, D]);
    const repeat = (t: string) => {
      const unsqueezed = g.op('Unsqueeze', [t, constant([2])]);
      // computed: the Expand shape comes from the tensor's own shape at run time, as a dynamic torch export writes it
      const by = shapes === 'computed' ? g.op('Mul', [g.op('Shape', [unsqueezed]), g.i64([1, 1, GROUP, 1, 1])]) : constant([1, 1, GROUP, 1, 1]);
      const expanded = g.op('Expand', [unsqueezed, by]);
      return g.op('Reshape', [expanded, constant([0, HEADS, -1, D])]);
    };
    const scores = g.op('MatMul', [q, g.op('Transpose', [repeat(k)], { perm })]);
    const probs = g.op('Softmax', [scores], { axis: -1 });
    g.output('out', 'float32', [B, HEADS, S, perm[3] === 2 ? D : L], g.op('MatMul', [probs, repeat(v)]));
    const { model } = g.build('attention.onnx.data');
    const path = join(scratch, `attention-${dirs++}.onnx`);
    writeFileSync(path, model);
    return path;
  }

  async function outputs(path: string, bytes: Uint8Array): Promise<[Float32Array, Float32Array]> {
    const random = symmetric(3);
    const tensor = (dims: number[]) => new Tensor('float32', Float32Array.from({ length: dims.reduce((x, y) => x * y) }, random), dims);
    const feeds = { q: tensor([B, HEADS, S, D]), k: tensor([B, KV_HEADS, L, D]), v: tensor([B, KV_HEADS, L, D]) };
    const [exported, shared] = await Promise.all([InferenceSession.create(path), InferenceSession.create(bytes)]);
    try {
      const [a, b] = await Promise.all([exported.run(feeds), shared.run(feeds)]);
      return [a.out!.data as Float32Array, b.out!.data as Float32Array];
    } finally {
      await Promise.all([exported.release(), shared.release()]);
    }
  }

  for (const shapes of ['initializers', 'constant nodes'] as const) {
    it(`constant shapes as ${shapes}: both matmuls, the same result`, async () => {
      const path = attention(shapes);
      const shared = withSharedKvHeads(readFileSync(path));
      expect(shared.count).toBe(2);
      expect(countOf(opTypes(shared.bytes), 'Expand')).toBe(0);
      const [exported, rewritten] = await outputs(path, shared.bytes);
      expect(relativeRms(rewritten, exported)).toBeLessThan(1e-6);
    });
  }

  it('a repeat whose shapes are computed at run time, or keys transposed another way, is left alone', () => {
    expect(withSharedKvHeads(readFileSync(attention('computed'))).count).toBe(0);
    // keys transposed [0, 1, 2, 3] (no-op): only the values' matmul matches
    expect(withSharedKvHeads(readFileSync(attention('initializers', [0, 1, 2, 3]))).count).toBe(1);
  });

  it('reads int64 constants stored as int64_data, negative values included', () => {
    const { onnx } = onnxProto;
    const packed = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.INT64, dims: [4], int64Data: [0, 6, -1, 4] }).finish();
    expect(int64Values(parseMessage(packed))).toEqual([0, 6, -1, 4]);
    const raw = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.INT64, dims: [2], rawData: new Uint8Array(BigInt64Array.from([-3n, 2n]).buffer) }).finish();
    expect(int64Values(parseMessage(raw))).toEqual([-3, 2]);
    const floats = onnx.TensorProto.encode({ dataType: onnx.TensorProto.DataType.FLOAT, dims: [1], floatData: [1] }).finish();
    expect(int64Values(parseMessage(floats))).toBeUndefined();
  });
});
