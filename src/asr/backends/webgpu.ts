import { readFile } from 'node:fs/promises';
import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { ownCache, prefillEach, SequenceCache, type CacheHandle, type DecoderBackend, type PrefillInput, type Prefilled, type StepResult, type StepRow } from '../backend.js';
import { parseKvName, type DecoderContract, type FloatType } from '../contract.js';
import { checkPrefillCache, DecoderInputs, hostBytes, int64, type Feeds } from '../decoder-io.js';
import type { EmbeddingLookup } from '../embeddings.js';
import { InferenceError, ModelLoadError } from '../errors.js';
import { GRAPH_OUTPUT, readModel, tensorInfo } from '../onnx-model.js';
import { DeviceOps } from './device-ops.js';

type Session = Pick<InferenceSession, 'run'>;

export interface WebGpuBackendOptions {
  /** sessions on the WebGPU provider whose present.* outputs stay on the device (gpu-buffer) */
  prefill: { session: Session; contract: DecoderContract };
  step: { session: Session; contract: DecoderContract };
  inputs: DecoderInputs;
  ops: DeviceOps;
  /** the token embedding table on the device, in the step's inputs_embeds type (graphs that take embeddings) */
  table?: Tensor;
  maxBatch: number;
}

/** Session options for a decoder graph on WebGPU: its present.* stay on the device, everything else comes back. */
export async function deviceResidentCache(file: string): Promise<InferenceSession.SessionOptions> {
  const outputs = readModel(await readFile(file)).graph.filter((f) => f.n === GRAPH_OUTPUT).map((f) => tensorInfo(f).name);
  return { preferredOutputLocation: Object.fromEntries(outputs.map((name) => [name, parseKvName(name) ? 'gpu-buffer' : 'cpu'])) };
}

/**
 * Whether the Vulkan loader WebGPU needs on Linux (libvulkan.so.1) can be opened, asked the way Dawn asks: with
 * dlopen, through Node's process.dlopen, where a library that loads but is no Node addon only fails to register.
 */
export function vulkanLoaderOpens(library = 'libvulkan.so.1'): boolean {
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, library);
    return true;
  } catch (err) {
    return /did not self-register/.test((err as Error).message);
  }
}

/** The whole embedding table as a host tensor [rows, hidden] of `type` (uploaded once, then dropped). */
function embeddingTable(lookup: EmbeddingLookup, type: FloatType): Tensor {
  const { rows, cols } = lookup.table;
  const data = type === 'float32' ? new Float32Array(rows * cols) : new Uint16Array(rows * cols);
  for (let id = 0; id < rows; id++) {
    if (type === 'float32') lookup.rowToFloat32(id, data as Float32Array, id * cols);
    else lookup.rowToFloat16(id, data as Uint16Array, id * cols);
  }
  return new Tensor(type, data, [rows, cols]);
}

/** Bytes a step moved between JavaScript and the device: what it fed from the host, what it read back. */
export interface StepTraffic {
  toDevice: number;
  toHost: number;
}

/** A sequence's cache on the device: its prefill's present.* until it joins the batch, then a row of the batch's. */
class DeviceCache extends SequenceCache {
  constructor(
    length: number,
    /** present.* of its prefill, [1, heads, length, headDim] each, on the device; handed to the batch on joining */
    public prefilled: Tensor[] | undefined,
  ) {
    super(length);
  }
}

const dispose = (tensors: readonly Tensor[] | undefined) => tensors?.forEach((t) => t.dispose());

/**
 * The KV cache on the GPU (onnxruntime's WebGPU provider): the batch cache is one [B, heads, width, headDim] device
 * tensor per layer and key/value, rows left-padded to the longest as the host backend lays them out. A step feeds
 * it as past_key_values.* and gets present.* back as new device tensors, which become the batch (the old ones are
 * disposed). When the batch changes, rows are selected, trimmed, padded and appended by DeviceOps' graphs on the
 * device. Per step JavaScript sends each row's id, position and first column (24 bytes) and reads back its greedy
 * id (8 bytes); no cache byte, logit or embedding crosses. A gpu-buffer tensor is never read from JavaScript
 * (getData() on one aborts the process in onnxruntime-node 1.30).
 */
export class WebGpuBackend implements DecoderBackend {
  readonly maxBatch: number;
  /** bytes moved by the last step (the bench reports them) */
  lastStepTraffic: StepTraffic = { toDevice: 0, toHost: 0 };
  /** handles made and not released: dispose() frees a prefill cache that never joined the batch too */
  private readonly live = new Set<DeviceCache>();
  private rows: DeviceCache[] = [];
  private width = 0;
  /** the batch cache on the device, in the step contract's kv order; empty when no row is in the batch */
  private batch: Tensor[] = [];
  private readonly heads: number;
  private readonly headDim: number;

  constructor(private readonly o: WebGpuBackendOptions) {
    this.maxBatch = o.maxBatch;
    const c = o.step.contract;
    if (!c.kvHeads || !c.headDim) throw new InferenceError(`${c.file}: the cache needs numeric head counts and head dimensions`);
    if (c.token.kind === 'inputs_embeds' && !o.table) throw new InferenceError(`${c.file} takes embeddings: the webgpu backend needs the table on the device`);
    this.heads = c.kvHeads;
    this.headDim = c.headDim;
  }

  /**
   * The backend over decoder sessions opened on WebGPU with deviceResidentCache: its device graphs on the same
   * provider (`session`: the engine's WebGPU options) and, for graphs that take embeddings, the table uploaded once
   * in the step's element type.
   */
  static async create(
    decoders: Omit<WebGpuBackendOptions, 'ops' | 'table'>,
    o: { embeddings: EmbeddingLookup | undefined; session: InferenceSession.SessionOptions; logger?: { warn(message: string): void } },
  ): Promise<WebGpuBackend> {
    const c = decoders.step.contract;
    const p = decoders.prefill.contract;
    if (p.kv.some((kv) => kv.input)) throw new ModelLoadError(`${p.file} takes a cache: the webgpu backend needs a prefill graph without one (ASR_BACKEND=host runs it)`);
    if (!c.greedyIds) o.logger?.warn(`${c.file}: kept with its logits, so the webgpu backend reads a row of logits back per sequence and step`);
    const embedsType = c.token.kind === 'inputs_embeds' ? c.token.type : undefined;
    const ops = await DeviceOps.create({ kvCount: c.kv.length, kvType: c.kvType, ...(embedsType ? { embedsType } : {}), session: o.session });
    let table: Tensor | undefined;
    try {
      table = embedsType ? await ops.upload(embeddingTable(o.embeddings!, embedsType)) : undefined;
      return new WebGpuBackend({ ...decoders, ops, ...(table ? { table } : {}) });
    } catch (err) {
      table?.dispose(); // before its session goes
      await ops.release();
      throw err;
    }
  }

  get liveHandles(): number {
    return this.live.size;
  }

  prefill(inputs: readonly PrefillInput[]): Promise<{ sequences: Prefilled[]; runMs: number }> {
    return prefillEach(inputs, (input) => this.prefillOne(input), (cache) => this.release(cache));
  }

  private async prefillOne(input: PrefillInput): Promise<Prefilled> {
    const { session, contract: c } = this.o.prefill;
    const n = input.ids.length;
    // The prompt goes up once (its embeddings with the audio rows in place): a step sends only ids.
    const out = await session.run(this.o.inputs.prefill(c, input));
    const present = c.kv.map((kv) => out[kv.output]!);
    try {
      checkPrefillCache(c, present, n, this.heads, this.headDim);
      if (present.some((t) => t.location !== 'gpu-buffer')) throw new InferenceError(`${c.file}: the cache came back to the host; its session must keep present.* on the device`);
      const [firstId] = this.o.inputs.nextIds(c, out, 1);
      const cache = new DeviceCache(n, present);
      this.live.add(cache);
      return { firstId: firstId!, cache };
    } catch (err) {
      dispose(present);
      throw err;
    }
  }

  async step(rows: readonly StepRow[]): Promise<StepResult> {
    if (rows.length === 0 || rows.length > this.maxBatch) throw new InferenceError(`a step takes 1 to ${this.maxBatch} rows; got ${rows.length}`);
    const tokens = new Map(rows.map((r) => [this.own(r.cache), r.token]));
    if (tokens.size !== rows.length) throw new InferenceError('a cache handle was listed twice in one step');
    const made: Tensor[] = [];
    try {
      await this.arrange([...tokens.keys()]);
      const caches = this.rows;
      const { session, contract: c } = this.o.step;
      const b = caches.length;
      const ids = caches.map((h) => tokens.get(h)!);
      const embed = c.token.kind === 'inputs_embeds';
      // a graph that takes neither a mask nor embeddings (one sequence at a time, ids) needs no step-inputs run
      const { mask, embeds, sent: toStepInputs } =
        c.attentionMask || embed
          ? await this.o.ops.stepInputs(caches.map((h) => this.width - h.length), this.width + 1, embed ? { ids, table: this.o.table! } : undefined)
          : { mask: undefined, embeds: undefined, sent: 0 };
      if (mask) made.push(mask);
      if (embeds) made.push(embeds);
      const feeds: Feeds = { [c.token.name]: embeds ?? int64(ids, [b, 1]) };
      if (c.attentionMask) feeds[c.attentionMask] = mask!;
      if (c.positionIds) feeds[c.positionIds.name] = this.o.inputs.positions(c, caches.map((h) => h.length), 1);
      c.kv.forEach((kv, i) => (feeds[kv.input!] = this.batch[i]!));
      const t0 = performance.now();
      const out = await session.run(feeds);
      const runMs = performance.now() - t0;
      const present = c.kv.map((kv) => out[kv.output]!);
      made.push(...present);
      const next = this.o.inputs.nextIds(c, out, b);
      const sent = hostBytes(Object.values(feeds)) + toStepInputs;
      const read = hostBytes(Object.values(out));
      this.lastStepTraffic = { toDevice: sent, toHost: read };
      dispose(this.batch);
      dispose(made.filter((t) => !present.includes(t)));
      this.batch = present;
      this.width += 1;
      for (const h of caches) h.length += 1;
      const byCache = new Map(caches.map((h, i) => [h, next[i]!]));
      return { ids: rows.map((r) => byCache.get(r.cache as DeviceCache)!), runMs };
    } catch (err) {
      // A failed step leaves no half-made batch: every row's cache is gone (the caller releases the handles).
      dispose(made);
      this.dropBatch();
      throw err;
    }
  }

  release(cache: CacheHandle): void {
    const h = this.own(cache, true);
    if (h.released) return;
    h.released = true;
    dispose(h.prefilled);
    h.prefilled = undefined;
    this.live.delete(h);
    // An idle engine holds no device memory for caches.
    if (this.rows.every((r) => r.released)) this.dropBatch();
  }

  /** Frees every device tensor (caches still alive included: their handles are unusable after) before the sessions. */
  async dispose(): Promise<void> {
    this.dropBatch();
    for (const h of this.live) {
      dispose(h.prefilled);
      h.prefilled = undefined;
    }
    this.o.table?.dispose();
    await this.o.ops.release();
  }

  private dropBatch(): void {
    for (const h of this.rows) h.dropped = true;
    dispose(this.batch);
    this.batch = [];
    this.rows = [];
    this.width = 0;
  }

  private own(cache: CacheHandle, releasedOk = false): DeviceCache {
    return ownCache(cache, DeviceCache, releasedOk);
  }

  /**
   * Makes the batch exactly `caches`: rows that left are dropped and the padding every remaining row shares is cut
   * (one select), then each new row is appended, the batch or the row left-padded to the wider of the two.
   */
  private async arrange(caches: DeviceCache[]): Promise<void> {
    const listed = new Set(caches);
    const kept = this.rows.filter((h) => listed.has(h));
    if (kept.length < this.rows.length) {
      for (const h of this.rows) if (!listed.has(h)) h.dropped = true;
      if (kept.length === 0) {
        this.dropBatch();
      } else {
        const width = Math.max(...kept.map((h) => h.length));
        const selected = await this.o.ops.select(this.batch, kept.map((h) => this.rows.indexOf(h)), this.width - width);
        dispose(this.batch);
        [this.batch, this.rows, this.width] = [selected, kept, width];
      }
    }
    const inBatch = new Set(this.rows);
    for (const h of caches) {
      if (inBatch.has(h)) continue;
      const own = h.prefilled!;
      h.prefilled = undefined;
      if (this.rows.length === 0) {
        [this.batch, this.rows, this.width] = [own, [h], h.length];
        continue;
      }
      const width = Math.max(this.width, h.length);
      try {
        const joined = await this.o.ops.append(this.batch, width - this.width, own, width - h.length);
        dispose(this.batch);
        [this.batch, this.width] = [joined, width];
        this.rows = [...this.rows, h];
      } catch (err) {
        h.dropped = true; // its cache went with the failed append
        throw err;
      } finally {
        dispose(own);
      }
    }
  }
}
