import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { ownCache, prefillEach, SequenceCache, type CacheHandle, type DecoderBackend, type PrefillInput, type Prefilled, type StepResult, type StepRow } from '../backend.js';
import { cacheTypesJoin, type DecoderContract } from '../contract.js';
import { checkPrefillCache, DecoderInputs, type Feeds } from '../decoder-io.js';
import { InferenceError } from '../errors.js';
import { asFloat32, float16Table, float32ToFloat16Bits, relativeRms } from '../half.js';

type Session = Pick<InferenceSession, 'run'>;
type KvArray = Float32Array | Uint16Array;

export interface HostBackendOptions {
  prefill: { session: Session; contract: DecoderContract };
  step: { session: Session; contract: DecoderContract };
  inputs: DecoderInputs;
  /** 1 for graphs whose batch is fixed */
  maxBatch: number;
  /** the step graph returns only each layer's new key/value column (kv-delta.ts): the kvDelta layout */
  kvDelta?: boolean;
}

/** A sequence's cache: its own prefill output until it joins the batch, then a row of the batch's buffers. */
class HostCache extends SequenceCache {
  constructor(
    length: number,
    /** the most positions it will reach, when known */
    readonly maxLength: number | undefined,
    /**
     * present.* of its prefill, [1, heads, length, headDim] each, in buffers of the backend's prefill pool; given
     * back once copied into the batch
     */
    public prefilled: { tensors: Tensor[]; buffers: KvArray[] } | undefined,
  ) {
    super(length);
  }
}

/** Without a known maximum length, grow by half again, so a cache growing one column per step reallocates O(log n) times. */
const GROWTH = 1.5;
/**
 * kvDelta layout: free columns laid out beyond the widest row. Every step's attention reads them (masked), so they
 * are few; filling them up lays the batch out again, once per this many steps.
 */
const DELTA_ROOM = 32;

/**
 * Today's cache layout: the KV cache in host memory, one [B, heads, width, headDim] buffer per layer and
 * key/value for the running batch. Rows are left-padded to the longest row (zeros, masked out by the
 * attention mask; each row's positions count only its own tokens). Two sets of buffers, allocated with room
 * to grow, take turns as past_key_values.* (input) and present.* (pre-allocated output the session writes
 * into), so a step neither allocates nor copies the cache in JavaScript. Rows move only when the batch
 * changes: a row joins (its prefill cache is copied in) or leaves (the last row takes its place; columns that
 * are padding for every row are dropped once they are a quarter of the width).
 *
 * With `kvDelta` (a step graph that returns only the new column, kv-delta.ts) the step reads one set of buffers,
 * [B, heads, stride, headDim] with up to DELTA_ROOM zero columns after the widest row. The step reads all `stride`
 * columns (those after the rows' tokens masked out), and its new column is written into the buffers after it: the
 * graph concatenates no cache, and JavaScript copies 2 x layers x B x heads x headDim values per step; filling the
 * room lays the batch out again in the other set (kept between layouts, not written by steps). A step rewritten
 * to hold a float16 cache as float32 (float32-cache.ts) casts none of it either: the prefill's float16 rows are
 * widened as they are copied in.
 */
export class HostBackend implements DecoderBackend {
  readonly maxBatch: number;
  private live = 0;
  /** rows of the batch buffers, in order */
  private rows: HostCache[] = [];
  /** columns of the batch cache: each row's tokens end at this column */
  private width = 0;
  /** columns per row and head in `past`: `width`, or with kvDelta up to DELTA_ROOM more */
  private stride = 0;
  private past: KvArray[] = [];
  /** the step's present.* buffers: the next cache (ping-pong), or with kvDelta the new column */
  private next: KvArray[] = [];
  /** kvDelta: the set the last layout left (or the larger of two), reused by the next one when large enough */
  private spare: KvArray[] = [];
  /**
   * Buffers for prefill caches, given back once a row is copied into the batch: the prefill writes into them
   * instead of onnxruntime-node copying each output into a fresh buffer (on this project's VM 25-55 ms of a
   * 0.9 s prefill at 104 tokens).
   */
  private prefillPool: KvArray[][] = [];
  private readonly delta: boolean;
  private readonly heads: number;
  private readonly headDim: number;
  private readonly prefillFetches: string[];
  private readonly stepOutputs: string[];

  constructor(private readonly o: HostBackendOptions) {
    this.maxBatch = o.maxBatch;
    this.delta = o.kvDelta ?? false;
    const c = o.step.contract;
    // the room after the rows is masked out, and positions are each row's own
    if (this.delta && (!c.attentionMask || !c.positionIds)) throw new InferenceError(`${c.file}: the kvDelta layout needs an attention mask and position ids`);
    if (!c.kvHeads || !c.headDim) throw new InferenceError(`${c.file}: the cache needs numeric head counts and head dimensions`);
    if (!cacheTypesJoin(o.prefill.contract.kvType, c.kvType, true)) throw new InferenceError(`${c.file}: a ${c.kvType} cache cannot hold the prefill's ${o.prefill.contract.kvType} one`);
    this.heads = c.kvHeads;
    this.headDim = c.headDim;
    // Only what the loop reads: the greedy ids (or logits) and the cache.
    this.prefillFetches = fetchNames(o.prefill.contract);
    this.stepOutputs = fetchNames(o.step.contract).filter((n) => !c.kv.some((kv) => kv.output === n));
  }

  get liveHandles(): number {
    return this.live;
  }

  prefill(inputs: readonly PrefillInput[]): Promise<{ sequences: Prefilled[]; runMs: number }> {
    return prefillEach(inputs, (input) => this.prefillOne(input), (cache) => this.release(cache));
  }

  private async prefillOne(input: PrefillInput): Promise<Prefilled> {
    const { session, contract: c } = this.o.prefill;
    const n = input.ids.length;
    const feeds = this.o.inputs.prefill(c, input);
    // A prefill graph that also takes a cache (merged decoders) gets an empty one.
    for (const kv of c.kv) if (kv.input) feeds[kv.input] = new Tensor(c.kvType, this.array(c, 0), [1, this.heads, 0, this.headDim]);
    const size = this.heads * n * this.headDim;
    // the smallest pooled set that holds this prompt's cache (the pool is kept largest first)
    const fitting = this.prefillPool.findLastIndex((set) => set[0]!.length >= size);
    const buffers = fitting >= 0 ? this.prefillPool.splice(fitting, 1)[0]! : c.kv.map(() => this.array(c, Math.ceil(size * GROWTH)));
    const fetches: Record<string, Tensor | null> = {};
    for (const name of this.prefillFetches) fetches[name] = null;
    c.kv.forEach((kv, i) => (fetches[kv.output] = new Tensor(c.kvType, buffers[i]!.subarray(0, size), [1, this.heads, n, this.headDim])));
    let out: InferenceSession.ReturnType;
    try {
      out = await session.run(feeds, fetches);
    } catch (err) {
      this.pool(buffers);
      // onnxruntime's words for an output buffer of another shape than the one computed (its message names both)
      if (!/output OrtValue provided|pre-allocated output/i.test(String(err))) throw err;
      throw new InferenceError(`${c.file} returned a cache of another shape than [1, ${this.heads}, ${n}, ${this.headDim}] for ${n} prompt tokens: ${String((err as Error).message ?? err).split('\n')[0]}`);
    }
    let firstId: number | undefined;
    const present = c.kv.map((kv) => out[kv.output]!);
    try {
      [firstId] = this.o.inputs.nextIds(c, out, 1);
      // (a session that ignored the buffers it was given)
      checkPrefillCache(c, present, n, this.heads, this.headDim);
    } catch (err) {
      this.pool(buffers);
      throw err;
    }
    this.live += 1;
    return { firstId: firstId!, cache: new HostCache(n, input.maxLength === undefined ? undefined : Math.max(n, input.maxLength), { tensors: present, buffers }) };
  }

  async step(rows: readonly StepRow[]): Promise<StepResult> {
    if (rows.length === 0 || rows.length > this.maxBatch) throw new InferenceError(`a step takes 1 to ${this.maxBatch} rows; got ${rows.length}`);
    const tokens = new Map(rows.map((r) => [this.own(r.cache), r.token]));
    if (tokens.size !== rows.length) throw new InferenceError('a cache handle was listed twice in one step');
    this.arrange([...tokens.keys()]);
    // kvDelta: the new column goes after the widest row; with no room left the batch is laid out again with some.
    if (this.delta && this.width === this.stride) this.layOut(this.rows, Math.max(...this.rows.map((h) => h.length)));
    // The batch keeps its own row order (rows are moved as little as possible); ids go back in the caller's.
    const caches = this.rows;
    const { session, contract: c } = this.o.step;
    const b = caches.length;
    const w = this.width;
    const fed = this.stride;
    const feeds: Feeds = { [c.token.name]: this.o.inputs.tokens(c, caches.map((h) => tokens.get(h)!), b) };
    if (c.attentionMask) feeds[c.attentionMask] = this.mask(caches, w, fed);
    if (c.positionIds) feeds[c.positionIds.name] = this.o.inputs.positions(c, caches.map((h) => h.length), 1);
    const pastSize = this.elements(b, fed);
    const presentWidth = this.delta ? 1 : w + 1;
    const nextSize = this.elements(b, presentWidth);
    if (!this.next[0] || this.next[0].length < nextSize) this.next = this.allocate(this.delta ? this.elements(this.maxBatch, 1) : this.elements(b, Math.ceil((w + 1) * GROWTH)));
    const fetches: Record<string, Tensor | null> = {};
    for (const name of this.stepOutputs) fetches[name] = null;
    c.kv.forEach((kv, i) => {
      feeds[kv.input!] = new Tensor(c.kvType, this.past[i]!.subarray(0, pastSize), [b, this.heads, fed, this.headDim]);
      fetches[kv.output] = new Tensor(c.kvType, this.next[i]!.subarray(0, nextSize), [b, this.heads, presentWidth, this.headDim]);
    });
    const t0 = performance.now();
    const out = await session.run(feeds, fetches);
    const runMs = performance.now() - t0;
    const ids = this.o.inputs.nextIds(c, out, b);
    if (this.delta) this.writeColumn(b, w);
    else {
      [this.past, this.next] = [this.next, this.past];
      this.stride += 1;
    }
    this.width += 1;
    for (const h of caches) h.length += 1;
    const byCache = new Map(caches.map((h, i) => [h, ids[i]!]));
    return { ids: rows.map((r) => byCache.get(r.cache as HostCache)!), runMs };
  }

  release(cache: CacheHandle): void {
    const h = this.own(cache, true);
    if (h.released) return;
    h.released = true;
    this.givePrefilledBack(h);
    this.live -= 1;
    // An idle batch keeps its buffers for the next one: memory written before is reused at the speed of a copy,
    // while fresh pages are faulted in as they are first written (on this project's VM a cold 8-row layout took
    // ~2 s, a warm one ~0.05 s). Held until dispose(): two layout sets (with kvDelta each sized for every row
    // maxBatch allows, half again as wide as when it was allocated; only the rows written take memory), the new
    // column's buffers, and up to maxBatch + 1 prefill sets.
    if (this.rows.every((r) => r.released)) {
      this.rows = [];
      this.width = 0;
      this.stride = 0;
    }
  }

  async dispose(): Promise<void> {
    this.past = [];
    this.next = [];
    this.spare = [];
    this.prefillPool = [];
  }

  private own(cache: CacheHandle, releasedOk = false): HostCache {
    return ownCache(cache, HostCache, releasedOk);
  }

  private elements(rows: number, width: number): number {
    return rows * this.heads * width * this.headDim;
  }

  private array(c: DecoderContract, n: number): KvArray {
    return c.kvType === 'float32' ? new Float32Array(n) : new Uint16Array(n);
  }

  private allocate(n: number): KvArray[] {
    return this.o.step.contract.kv.map(() => this.array(this.o.step.contract, n));
  }

  /**
   * Makes the batch exactly `caches`. A row that left is replaced by the last row (one row moved), a prefilled
   * row that fits the batch's width is written after the others; only a row longer than the batch, or padding
   * common to every row growing past a quarter of the width, lays the whole batch out again.
   */
  private arrange(caches: HostCache[]): void {
    const listed = new Set(caches);
    if (caches.length === this.rows.length && this.rows.every((h) => listed.has(h))) return;
    for (const h of this.rows) if (!listed.has(h)) h.dropped = true;
    const width = Math.max(...caches.map((h) => h.length));
    // (kvDelta: with no room left the step lays the batch out again anyway; a row copied in now would be copied twice)
    const fits = this.rows.length > 0 && width <= this.width && this.width - width <= this.width / 4 && (!this.delta || this.width < this.stride);
    if (!fits || this.past[0]!.length < this.elements(caches.length, this.stride)) {
      this.layOut(caches, width);
      return;
    }
    const rows = [...this.rows];
    for (let i = 0; i < rows.length; ) {
      if (listed.has(rows[i]!)) {
        i++;
        continue;
      }
      const last = rows.length - 1;
      if (i !== last) this.past.forEach((buffer) => this.copyRow({ buffer, row: last, stride: this.stride, end: this.width }, { buffer, row: i }, rows[last]!.length));
      rows[i] = rows[last]!;
      rows.pop();
    }
    const inBatch = new Set(rows);
    for (const h of caches) {
      if (inBatch.has(h)) continue;
      this.past.forEach((buffer, i) => this.copyRow(prefilledRow(h, i), { buffer, row: rows.length }, h.length));
      this.givePrefilledBack(h);
      rows.push(h);
    }
    this.rows = rows;
  }

  /**
   * The batch laid out afresh, left-padded to `width` (columns padded in every row dropped): in the other set of
   * buffers (ping-pong: `next`), or with kvDelta with room after the rows, in the set the last layout left when it
   * is large enough (a new one holds every row the batch may have, each half again as wide).
   */
  private layOut(caches: HostCache[], width: number): void {
    const remaining = Math.max(0, ...caches.map((h) => (h.maxLength ?? h.length) - h.length));
    // Ping-pong: room for every step these rows can still take, so the buffers are allocated once per layout.
    // kvDelta: every step reads the whole stride, so only a little room (all of it when a row does not say how
    // long it may grow), filled before the next layout.
    const room = caches.some((h) => h.maxLength === undefined) ? DELTA_ROOM : Math.min(DELTA_ROOM, remaining + 1);
    const stride = this.delta ? width + room : width;
    const size = this.elements(caches.length, this.delta ? stride : width + 1 + remaining);
    // copyRow writes every column of each row it lays out, so a reused set needs no clearing
    const reusable = this.delta ? this.spare : this.next;
    const target = reusable.length && reusable[0]!.length >= size ? reusable : this.allocate(this.delta ? this.elements(this.maxBatch, Math.ceil(stride * GROWTH)) : size);
    const from = new Map(this.rows.map((h, row) => [h, row]));
    target.forEach((buffer, i) =>
      caches.forEach((h, row) => {
        const old = from.get(h);
        const src = old !== undefined ? { buffer: this.past[i]!, row: old, stride: this.stride, end: this.width } : prefilledRow(h, i);
        this.copyRow(src, { buffer, row, stride, end: width }, h.length);
      }),
    );
    const old = this.past;
    this.past = target;
    if (!this.delta) this.next = old.length && old[0]!.length >= target[0]!.length ? old : this.allocate(target[0]!.length);
    // the set just left becomes the spare; when the spare was too small to use, the larger of the two stays
    else if (target === reusable || (old[0]?.length ?? 0) >= (reusable[0]?.length ?? 0)) this.spare = old;
    this.rows = caches;
    this.width = width;
    this.stride = stride;
    for (const h of caches) this.givePrefilledBack(h);
  }

  /** A row's prefill buffers back to the pool. */
  private givePrefilledBack(h: HostCache): void {
    if (h.prefilled) this.pool(h.prefilled.buffers);
    h.prefilled = undefined;
  }

  /** Prefill buffers kept for the next prefills: a set per row of the batch and one more, the largest ones. */
  private pool(buffers: KvArray[]): void {
    this.prefillPool.push(buffers);
    this.prefillPool.sort((a, b) => b[0]!.length - a[0]!.length);
    this.prefillPool.length = Math.min(this.prefillPool.length, this.maxBatch + 1);
  }

  /**
   * Copies the `length` columns of a row that end at `src.end` into row `dst.row` of a buffer `dst.stride` columns
   * wide (the batch's by default), ending at `dst.end` (the batch's width): zeros before them (left padding, masked,
   * but never NaN) and after them (kvDelta's room).
   */
  private copyRow(src: RowSource, dst: { buffer: KvArray; row: number; stride?: number; end?: number }, length: number): void {
    const { heads, headDim } = this;
    const stride = dst.stride ?? this.stride;
    const end = dst.end ?? this.width;
    for (let head = 0; head < heads; head++) {
      const d = (dst.row * heads + head) * stride * headDim;
      const s = ((src.row * heads + head) * src.stride + src.end - length) * headDim;
      dst.buffer.fill(0, d, d + (end - length) * headDim);
      copyValues(dst.buffer, d + (end - length) * headDim, src.buffer.subarray(s, s + length * headDim));
      dst.buffer.fill(0, d + end * headDim, d + stride * headDim);
    }
  }

  /** kvDelta: the step's new column of each row and head, written at column `column` of the batch's buffers. */
  private writeColumn(rows: number, column: number): void {
    const { heads, headDim, stride } = this;
    this.past.forEach((buffer, i) => {
      const fresh = this.next[i]!;
      for (let r = 0; r < rows * heads; r++) buffer.set(fresh.subarray(r * headDim, (r + 1) * headDim), (r * stride + column) * headDim);
    });
  }

  /** [B, fed + 1]: 1 over each row's tokens (ending at `width`) and the one fed now (the last column), else 0. */
  private mask(caches: HostCache[], width: number, fed: number): Tensor {
    const columns = fed + 1;
    const data = new BigInt64Array(caches.length * columns);
    caches.forEach((h, row) => {
      data.fill(1n, row * columns + width - h.length, row * columns + width);
      data[row * columns + fed] = 1n;
    });
    return new Tensor('int64', data, [caches.length, columns]);
  }
}

/** Columns of masked room the probe feeds, and the past before them. */
const PROBE_ROOM = 4;
const PROBE_PAST = 3;
/** Relative RMS between the two runs' columns: rounding is far below it, attention reading the room far above. */
const PROBE_TOLERANCE = 1e-2;

/**
 * Why a step rewritten for the kvDelta layout cannot take it, or undefined when it can: it must ignore the masked
 * room after its rows, which a step taking a mask but not applying it in attention would read. The same token over
 * the same past, fed with and without room holding other values, must give the second layer (the first to read
 * attention) the same new column. A probe that cannot run, or a step of one layer, is not trusted. Run once at load.
 */
export async function maskedRoomRead(step: { session: Session; contract: DecoderContract }, inputs: DecoderInputs): Promise<string | undefined> {
  const c = step.contract;
  const layers = [...new Set(c.kv.map((kv) => kv.layer))].sort((a, b) => a - b);
  if (!c.attentionMask || !c.positionIds || !c.kvHeads || !c.headDim) return 'it takes no attention mask or position ids, or its cache has no numeric heads';
  if (layers.length < 2) return 'with one layer no new column reads attention, so the probe could not tell';
  try {
    const run = async (room: number) => {
      const width = PROBE_PAST + room;
      const mask = new BigInt64Array(width + 1);
      mask.fill(1n, 0, PROBE_PAST);
      mask[width] = 1n;
      const feeds: Feeds = {
        [c.token.name]: inputs.tokens(c, [0], 1),
        [c.attentionMask!]: new Tensor('int64', mask, [1, width + 1]),
        [c.positionIds!.name]: inputs.positions(c, [PROBE_PAST], 1),
      };
      for (const [i, kv] of c.kv.entries()) {
        // the same past in both runs, then room of other values: small normal numbers, exact in fp16
        const values = Float32Array.from({ length: c.kvHeads! * width * c.headDim! }, (_, j) => {
          const [head, column, d] = [Math.floor(j / (width * c.headDim!)), Math.floor(j / c.headDim!) % width, j % c.headDim!];
          return column < PROBE_PAST ? ((i * 7 + head * 5 + column * 3 + d) % 13) / 16 - 0.375 : ((j * 5) % 11) / 8 - 0.625;
        });
        feeds[kv.input!] = c.kvType === 'float32' ? new Tensor('float32', values, [1, c.kvHeads!, width, c.headDim!]) : new Tensor('float16', Uint16Array.from(values, float32ToFloat16Bits), [1, c.kvHeads!, width, c.headDim!]);
      }
      const out = await step.session.run(feeds);
      return c.kv.map((kv) => out[kv.output]!);
    };
    const [bare, roomy] = [await run(0), await run(PROBE_ROOM)];
    // The second layer's new column is the first to read attention (the first layer's); deeper ones amplify
    // rounding (int8 activations re-quantise each layer's input), so they would tell the summation order too.
    const worst = Math.max(...c.kv.map((kv, i) => (kv.layer === layers[1] ? relativeRms(asFloat32(bare[i]!), asFloat32(roomy[i]!)) : 0)));
    return worst <= PROBE_TOLERANCE ? undefined : `its layer ${layers[1]} column moves by ${worst.toPrecision(2)} (relative RMS) when masked columns change: its attention mask is not applied there`;
  } catch (err) {
    return `the probe could not run: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** Where a row's columns come from: a batch buffer, or a sequence's own prefill cache. */
interface RowSource {
  buffer: KvArray;
  row: number;
  /** columns per row and head */
  stride: number;
  /** the row's tokens end before this column */
  end: number;
}

/** Layer-part `i` of a sequence's prefill cache, [1, heads, length, headDim]. */
function prefilledRow(h: HostCache, i: number): RowSource {
  return { buffer: h.prefilled!.tensors[i]!.data as KvArray, row: 0, stride: h.length, end: h.length };
}

/** `src` written into `dst` at `at`; float16 bits into a float32 cache (float32-cache.ts) are widened, exactly. */
function copyValues(dst: KvArray, at: number, src: KvArray): void {
  if (dst instanceof Float32Array && src instanceof Uint16Array) {
    const table = float16Table();
    for (let i = 0; i < src.length; i++) dst[at + i] = table[src[i]!]!;
  } else dst.set(src, at);
}

/** Outputs the loop needs from a decoder: the cache and either greedy_ids or the logits. */
function fetchNames(c: DecoderContract): string[] {
  return [c.greedyIds?.name ?? c.logits!.name, ...c.kv.map((kv) => kv.output)];
}
