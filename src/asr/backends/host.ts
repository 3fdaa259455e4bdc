import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { ownCache, prefillEach, SequenceCache, type CacheHandle, type DecoderBackend, type PrefillInput, type Prefilled, type StepResult, type StepRow } from '../backend.js';
import type { DecoderContract } from '../contract.js';
import { checkPrefillCache, DecoderInputs, type Feeds } from '../decoder-io.js';
import { InferenceError } from '../errors.js';

type Session = Pick<InferenceSession, 'run'>;
type KvArray = Float32Array | Uint16Array;

export interface HostBackendOptions {
  prefill: { session: Session; contract: DecoderContract };
  step: { session: Session; contract: DecoderContract };
  inputs: DecoderInputs;
  /** 1 for graphs whose batch is fixed */
  maxBatch: number;
}

/** A sequence's cache: its own prefill output until it joins the batch, then a row of the batch's buffers. */
class HostCache extends SequenceCache {
  constructor(
    length: number,
    /** the most positions it will reach, when known */
    readonly maxLength: number,
    /** present.* of its prefill, [1, heads, length, headDim] each; dropped once copied into the batch */
    public prefilled: Tensor[] | undefined,
  ) {
    super(length);
  }
}

/** Without a known maximum length, grow by half again, so a cache growing one column per step reallocates O(log n) times. */
const GROWTH = 1.5;

/**
 * Today's cache layout: the KV cache in host memory, one [B, heads, width, headDim] buffer per layer and
 * key/value for the running batch. Rows are left-padded to the longest row (zeros, masked out by the
 * attention mask; each row's positions count only its own tokens). Two sets of buffers, allocated with room
 * to grow, take turns as past_key_values.* (input) and present.* (pre-allocated output the session writes
 * into), so a step neither allocates nor copies the cache in JavaScript. Rows move only when the batch
 * changes: a row joins (its prefill cache is copied in) or leaves (the last row takes its place; columns that
 * are padding for every row are dropped once they are a quarter of the width).
 */
export class HostBackend implements DecoderBackend {
  readonly maxBatch: number;
  private live = 0;
  /** rows of the batch buffers, in order */
  private rows: HostCache[] = [];
  /** columns of the batch cache */
  private width = 0;
  private past: KvArray[] = [];
  private next: KvArray[] = [];
  private readonly heads: number;
  private readonly headDim: number;
  private readonly prefillFetches: string[];
  private readonly stepOutputs: string[];

  constructor(private readonly o: HostBackendOptions) {
    this.maxBatch = o.maxBatch;
    const c = o.step.contract;
    if (!c.kvHeads || !c.headDim) throw new InferenceError(`${c.file}: the cache needs numeric head counts and head dimensions`);
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
    const out = await session.run(feeds, this.prefillFetches);
    const [firstId] = this.o.inputs.nextIds(c, out, 1);
    const present = c.kv.map((kv) => out[kv.output]!);
    checkPrefillCache(c, present, n, this.heads, this.headDim);
    this.live += 1;
    return { firstId: firstId!, cache: new HostCache(n, Math.max(n, input.maxLength ?? n), present) };
  }

  async step(rows: readonly StepRow[]): Promise<StepResult> {
    if (rows.length === 0 || rows.length > this.maxBatch) throw new InferenceError(`a step takes 1 to ${this.maxBatch} rows; got ${rows.length}`);
    const tokens = new Map(rows.map((r) => [this.own(r.cache), r.token]));
    if (tokens.size !== rows.length) throw new InferenceError('a cache handle was listed twice in one step');
    this.arrange([...tokens.keys()]);
    // The batch keeps its own row order (rows are moved as little as possible); ids go back in the caller's.
    const caches = this.rows;
    const { session, contract: c } = this.o.step;
    const b = caches.length;
    const w = this.width;
    const feeds: Feeds = { [c.token.name]: this.o.inputs.tokens(c, caches.map((h) => tokens.get(h)!), b) };
    if (c.attentionMask) feeds[c.attentionMask] = this.mask(caches, w);
    if (c.positionIds) feeds[c.positionIds.name] = this.o.inputs.positions(c, caches.map((h) => h.length), 1);
    const pastSize = this.elements(b, w);
    const nextSize = this.elements(b, w + 1);
    if (this.next[0]!.length < nextSize) this.next = this.allocate(this.elements(b, Math.ceil((w + 1) * GROWTH)));
    const fetches: Record<string, Tensor | null> = {};
    for (const name of this.stepOutputs) fetches[name] = null;
    c.kv.forEach((kv, i) => {
      feeds[kv.input!] = new Tensor(c.kvType, this.past[i]!.subarray(0, pastSize), [b, this.heads, w, this.headDim]);
      fetches[kv.output] = new Tensor(c.kvType, this.next[i]!.subarray(0, nextSize), [b, this.heads, w + 1, this.headDim]);
    });
    const t0 = performance.now();
    const out = await session.run(feeds, fetches);
    const runMs = performance.now() - t0;
    const ids = this.o.inputs.nextIds(c, out, b);
    [this.past, this.next] = [this.next, this.past];
    this.width += 1;
    for (const h of caches) h.length += 1;
    const byCache = new Map(caches.map((h, i) => [h, ids[i]!]));
    return { ids: rows.map((r) => byCache.get(r.cache as HostCache)!), runMs };
  }

  release(cache: CacheHandle): void {
    const h = this.own(cache, true);
    if (h.released) return;
    h.released = true;
    h.prefilled = undefined;
    this.live -= 1;
    // An idle engine holds no cache memory.
    if (this.rows.every((r) => r.released)) {
      this.rows = [];
      this.width = 0;
      this.past = [];
      this.next = [];
    }
  }

  async dispose(): Promise<void> {
    // nothing but caches, which release() frees
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
    const fits = this.rows.length > 0 && width <= this.width && this.width - width <= this.width / 4;
    if (!fits || this.past[0]!.length < this.elements(caches.length, this.width)) {
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
      if (i !== last) this.past.forEach((buffer) => this.copyRow(buffer, last, this.width, buffer, i, rows[last]!.length));
      rows[i] = rows[last]!;
      rows.pop();
    }
    const inBatch = new Set(rows);
    for (const h of caches) {
      if (inBatch.has(h)) continue;
      this.past.forEach((buffer, i) => this.copyRow(h.prefilled![i]!.data as KvArray, 0, h.length, buffer, rows.length, h.length));
      h.prefilled = undefined;
      rows.push(h);
    }
    this.rows = rows;
  }

  /** The batch laid out afresh in the spare buffers, left-padded to `width` (columns padded in every row dropped). */
  private layOut(caches: HostCache[], width: number): void {
    // Room for every step these rows can still take, so the buffers are allocated once per layout.
    const columns = width + 1 + Math.max(0, ...caches.map((h) => h.maxLength - h.length));
    const target = this.next.length && this.next[0]!.length >= this.elements(caches.length, columns) ? this.next : this.allocate(this.elements(caches.length, columns));
    const from = new Map(this.rows.map((h, row) => [h, row]));
    target.forEach((dst, i) =>
      caches.forEach((h, row) => {
        const old = from.get(h);
        if (old !== undefined) this.copyRow(this.past[i]!, old, this.width, dst, row, h.length, width);
        else this.copyRow(h.prefilled![i]!.data as KvArray, 0, h.length, dst, row, h.length, width);
      }),
    );
    const spare = this.past;
    this.past = target;
    this.next = spare.length && spare[0]!.length >= target[0]!.length ? spare : this.allocate(target[0]!.length);
    this.rows = caches;
    this.width = width;
    for (const h of caches) h.prefilled = undefined;
  }

  /**
   * Copies the last `length` columns of row `srcRow` of a [B, heads, srcWidth, headDim] buffer into row `dstRow`
   * of one `dstWidth` wide, right-aligned, zeros over the left padding (masked, but never NaN).
   */
  private copyRow(src: KvArray, srcRow: number, srcWidth: number, dst: KvArray, dstRow: number, length: number, dstWidth = this.width): void {
    const { heads, headDim } = this;
    const pad = (dstWidth - length) * headDim;
    for (let head = 0; head < heads; head++) {
      const d = (dstRow * heads + head) * dstWidth * headDim;
      const s = ((srcRow * heads + head) * srcWidth + srcWidth - length) * headDim;
      dst.fill(0, d, d + pad);
      dst.set(src.subarray(s, s + length * headDim), d + pad);
    }
  }

  /** [B, width + 1]: 0 over each row's left padding, 1 over its tokens and the one fed now. */
  private mask(caches: HostCache[], width: number): Tensor {
    const columns = width + 1;
    const data = new BigInt64Array(caches.length * columns).fill(1n);
    caches.forEach((h, row) => data.fill(0n, row * columns, row * columns + width - h.length));
    return new Tensor('int64', data, [caches.length, columns]);
  }
}

/** Outputs the loop needs from a decoder: the cache and either greedy_ids or the logits. */
function fetchNames(c: DecoderContract): string[] {
  return [c.greedyIds?.name ?? c.logits!.name, ...c.kv.map((kv) => kv.output)];
}
