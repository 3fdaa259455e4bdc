import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import type { CacheHandle } from '../../src/asr/backend.js';
import { HostBackend } from '../../src/asr/backends/host.js';
import type { DecoderContract, KvBinding } from '../../src/asr/contract.js';
import { DecoderInputs } from '../../src/asr/decoder-io.js';
import { asFloat32, float16Table, float32ToFloat16Bits } from '../../src/asr/half.js';

/*
 * HostBackend's two cache layouts driven through thousands of steps by sessions that check, instead of computing:
 * sequences join (with or without a known length), leave, are released before joining, and are listed in any
 * order; every step must hand each row exactly its own history in the columns its mask keeps, zeros in the columns
 * it masks, its own position, and a mask one column wider than the past.
 */

const [HEADS, HEAD_DIM, LAYERS, MAX_BATCH] = [2, 2, 2, 6];
const kv: KvBinding[] = Array.from({ length: LAYERS * 2 }, (_, i) => ({
  layer: i >> 1,
  part: i % 2 ? 'value' : 'key',
  input: `past.${i}`,
  output: `present.${i}`,
}));
const contract = (role: 'prefill' | 'step', kvType: 'float32' | 'float16' = 'float32'): DecoderContract => ({
  file: role,
  token: { kind: 'input_ids', name: 'input_ids' },
  attentionMask: 'attention_mask',
  positionIds: { name: 'position_ids', rank: 2 },
  kv: role === 'prefill' ? kv.map(({ layer, part, output }) => ({ layer, part, output })) : kv,
  kvType,
  kvHeads: HEADS,
  headDim: HEAD_DIM,
  greedyIds: { name: 'greedy_ids' },
});

/**
 * The cache value sequence `seq` writes at position `pos` of layer-part `i`, head `h`, dim `d`: never 0, and never
 * the same for two of them. With a float16 cache, one of the 31743 finite positive float16 values: the index
 * modulo 31743 is still one to one, since indices of equal (i, h, d) differ by a multiple of 16 and 16 x 31743 is
 * beyond the largest index written here.
 */
const valueOf = (half: boolean) => (seq: number, pos: number, i: number, h: number, d: number) => {
  const v = (((seq * 512 + pos) * 4 + i) * HEADS + h) * HEAD_DIM + d;
  return half ? float16Table()[(v % 31743) + 1]! : v + 1;
};
/** A token says which sequence fed it and at which position: seq * 10000 + position. */
const token = (seq: number, pos: number) => seq * 10000 + pos;

type Feeds = Record<string, Tensor>;
type Session = Pick<InferenceSession, 'run'>;

/** The prefill's and the step's cache types: float32 both, a float16 prefill widened into float32, or float16 both. */
type CacheTypes = 'float32' | 'widened' | 'float16';

function sessions(delta: boolean, problems: string[], types: CacheTypes = 'float32'): { prefill: Session; step: Session } {
  const problem = (m: string) => problems.length < 10 && problems.push(m);
  const [halfPrefill, halfStep] = [types !== 'float32', types === 'float16'];
  const value = valueOf(halfPrefill);
  // As onnxruntime: into the output buffers it is given (the backend's pool), which must have the output's shape.
  const prefill = async (feeds: Feeds, fetches?: Record<string, Tensor | null>) => {
    const ids = feeds.input_ids!.data as BigInt64Array;
    const [n, seq] = [ids.length, Number(ids[0])];
    const out: Feeds = { greedy_ids: new Tensor('int64', BigInt64Array.from([BigInt(token(seq, n))]), [1]) };
    const dims = [1, HEADS, n, HEAD_DIM];
    kv.forEach((k, i) => {
      const given = fetches?.[k.output];
      if (given && given.dims.join() !== dims.join()) throw new Error(`The output OrtValue provided for output '${k.output}' has shape [${given.dims.join(', ')}] but the computed output shape is [${dims.join(', ')}]`);
      const t = given ?? (halfPrefill ? new Tensor('float16', new Uint16Array(HEADS * n * HEAD_DIM), dims) : new Tensor('float32', new Float32Array(HEADS * n * HEAD_DIM), dims));
      const a = t.data as Float32Array | Uint16Array;
      for (let h = 0; h < HEADS; h++) {
        for (let p = 0; p < n; p++) for (let d = 0; d < HEAD_DIM; d++) a[(h * n + p) * HEAD_DIM + d] = halfPrefill ? float32ToFloat16Bits(value(seq, p, i, h, d)) : value(seq, p, i, h, d);
      }
      out[k.output] = t;
    });
    return out;
  };
  const step = async (feeds: Feeds, fetches: Record<string, Tensor | null>) => {
    const tokens = feeds.input_ids!.data as BigInt64Array;
    const rows = tokens.length;
    const mask = feeds.attention_mask!.data as BigInt64Array;
    const columns = feeds.attention_mask!.dims[1]!;
    const positions = feeds.position_ids!.data as BigInt64Array;
    kv.forEach((k, i) => {
      const past = feeds[k.input!]!;
      const stride = past.dims[2]!;
      if (stride + 1 !== columns) problem(`mask ${columns} columns for a past of ${stride}`);
      const pastData = halfStep ? asFloat32(past) : (past.data as Float32Array);
      const present = fetches[k.output]!;
      const out = present.data as Float32Array | Uint16Array;
      const put = (at: number, v: number) => (out[at] = halfStep ? float32ToFloat16Bits(v) : v);
      const width = present.dims[2]!;
      if (width !== (delta ? 1 : stride + 1)) problem(`present ${width} columns wide`);
      for (let r = 0; r < rows; r++) {
        const t = Number(tokens[r]);
        const [seq, pos] = [Math.floor(t / 10000), t % 10000];
        if (Number(positions[r]) !== pos) problem(`sequence ${seq} fed at position ${positions[r]}, not ${pos}`);
        if (mask[r * columns + stride] !== 1n) problem('the new column is masked out');
        let seen = 0;
        for (let c = 0; c < stride; c++) {
          const kept = mask[r * columns + c] === 1n;
          for (let h = 0; h < HEADS; h++) {
            for (let d = 0; d < HEAD_DIM; d++) {
              const v = pastData[((r * HEADS + h) * stride + c) * HEAD_DIM + d]!;
              if (kept && v !== value(seq, seen, i, h, d)) problem(`sequence ${seq} at ${pos}: column ${c} holds ${v}, not its position ${seen}`);
              if (!kept && v !== 0) problem(`sequence ${seq}: masked column ${c} holds ${v}`);
            }
          }
          if (kept) seen++;
        }
        if (seen !== pos) problem(`sequence ${seq} sees ${seen} columns at position ${pos}`);
        for (let h = 0; h < HEADS; h++) {
          for (let d = 0; d < HEAD_DIM; d++) {
            if (!delta) for (let c = 0; c < stride; c++) put(((r * HEADS + h) * width + c) * HEAD_DIM + d, pastData[((r * HEADS + h) * stride + c) * HEAD_DIM + d]!);
            put(((r * HEADS + h) * width + width - 1) * HEAD_DIM + d, value(seq, pos, i, h, d));
          }
        }
      }
    });
    const ids = BigInt64Array.from(tokens, (t) => t + 1n);
    return { ...fetches, greedy_ids: new Tensor('int64', ids, [rows]) };
  };
  return { prefill: { run: prefill as unknown as Session['run'] }, step: { run: step as unknown as Session['run'] } };
}

async function drive(delta: boolean, seed: number, problems: string[], types: CacheTypes): Promise<number> {
  let state = seed;
  const random = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const { prefill, step } = sessions(delta, problems, types);
  const backend = new HostBackend({
    prefill: { session: prefill, contract: contract('prefill', types === 'float32' ? 'float32' : 'float16') },
    step: { session: step, contract: contract('step', types === 'float16' ? 'float16' : 'float32') },
    inputs: new DecoderInputs(undefined, 'float32'),
    maxBatch: MAX_BATCH,
    kvDelta: delta,
  });
  const audio = { rows: new Tensor('float32', new Float32Array(0), [0, 1]), offset: 0 };
  let active: { cache: CacheHandle; token: number; left: number }[] = [];
  let released = new Set<CacheHandle>();
  let next = 0;
  let rowSteps = 0;
  for (let s = 0; s < 600; s++) {
    while (active.length < MAX_BATCH && random() < (active.length === 0 ? 1 : 0.08)) {
      const seq = (next++ % 50) + 1;
      const n = 1 + Math.floor(random() * 70);
      const steps = 1 + Math.floor(random() * 90);
      const known = random() < 0.6;
      const { sequences } = await backend.prefill([{ ids: Array<number>(n).fill(seq), audio, ...(known ? { maxLength: n + steps + Math.floor(random() * 3) } : {}) }]);
      const [first] = sequences;
      if (random() < 0.05) backend.release(first!.cache);
      else active.push({ cache: first!.cache, token: first!.firstId, left: steps });
    }
    const rows = [...active].sort(() => random() - 0.5);
    const { ids } = await backend.step(rows.map((a) => ({ cache: a.cache, token: a.token })));
    rowSteps += rows.length;
    rows.forEach((a, i) => {
      a.token = ids[i]!;
      a.left -= 1;
    });
    released = new Set(active.filter((a) => a.left <= 0 || random() < 0.01).map((a) => a.cache));
    for (const cache of released) backend.release(cache);
    active = active.filter((a) => !released.has(a.cache));
  }
  for (const a of active) backend.release(a.cache);
  expect(backend.liveHandles).toBe(0);
  return rowSteps;
}

describe("the host backend's cache layouts", () => {
  it.each<[string, boolean, CacheTypes]>([
    ['the step returning its whole cache (ping-pong)', false, 'float32'],
    ['the step returning its whole cache (ping-pong), float16', false, 'float16'],
    ['the step returning only the new column (kvDelta, with room)', true, 'float32'],
    ['kvDelta with float16 prefill caches widened into a float32 one (float32-cache.ts)', true, 'widened'],
    ['kvDelta with a float16 cache throughout (CPU_FLOAT32_CACHE=false)', true, 'float16'],
  ])('%s: each row sees exactly its own history, masked columns are zeros, through joins, leaves, idle batches and re-layouts', async (_, delta, types) => {
    const problems: string[] = [];
    let rowSteps = 0;
    for (let seed = 1; seed <= 8; seed++) rowSteps += await drive(delta, seed, problems, types);
    expect(problems).toEqual([]);
    expect(rowSteps).toBeGreaterThan(8 * 600);
  });

  it('refuses the kvDelta layout for a step without an attention mask', () => {
    const { prefill, step } = sessions(true, []);
    const { attentionMask: _, ...unmasked } = contract('step');
    expect(
      () =>
        new HostBackend({
          prefill: { session: prefill, contract: contract('prefill') },
          step: { session: step, contract: unmasked },
          inputs: new DecoderInputs(undefined, 'float32'),
          maxBatch: 1,
          kvDelta: true,
        }),
    ).toThrow(/the kvDelta layout needs an attention mask and position ids/);
  });
});
