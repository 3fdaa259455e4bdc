import { Tensor } from 'onnxruntime-node';
import type { PrefillInput } from './backend.js';
import type { DecoderContract, FloatType } from './contract.js';
import type { EmbeddingLookup } from './embeddings.js';
import { InferenceError } from './errors.js';
import { float16Table, float32ToFloat16Bits } from './half.js';

/*
 * The decoder's non-cache inputs and its token output, as the contract read at load time says: token ids or
 * their embeddings (audio rows in place of the pads), position ids, and the greedy id per row. Shared by every
 * backend; none of it touches the KV cache.
 */

export type Feeds = Record<string, Tensor>;

export const int64 = (values: ArrayLike<number>, dims: number[]) =>
  new Tensor('int64', BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(v)), dims);

/** Rows of a float tensor as the element type another graph wants. */
function convertFloats(data: Float32Array | Uint16Array, from: FloatType, to: FloatType): Float32Array | Uint16Array {
  if (from === to) return data;
  if (to === 'float32') {
    const lut = float16Table();
    return Float32Array.from(data as Uint16Array, (h) => lut[h]!);
  }
  return Uint16Array.from(data as Float32Array, float32ToFloat16Bits);
}

export class DecoderInputs {
  constructor(
    private readonly embeddings: EmbeddingLookup | undefined,
    /** element type of the encoder's output rows */
    private readonly audioType: FloatType,
  ) {}

  /**
   * Token input of `rows` rows of ids.length / rows tokens each; with embeddings, audio rows replace the
   * positions audio.offset.. of the (single) row.
   */
  tokens(c: DecoderContract, ids: readonly number[], rows: number, audio?: { rows: Tensor; offset: number }): Tensor {
    const length = ids.length / rows;
    if (c.token.kind === 'input_ids') return int64(ids, [rows, length]);
    const lookup = this.embeddings!;
    const width = lookup.hiddenSize;
    const type = c.token.type;
    const data = type === 'float32' ? new Float32Array(ids.length * width) : new Uint16Array(ids.length * width);
    ids.forEach((id, i) =>
      type === 'float32' ? lookup.rowToFloat32(id, data as Float32Array, i * width) : lookup.rowToFloat16(id, data as Uint16Array, i * width),
    );
    if (audio) data.set(convertFloats(audio.rows.data as Float32Array | Uint16Array, this.audioType, type), audio.offset * width);
    return new Tensor(type, data, [rows, length, width]);
  }

  /** A prompt's feeds but the cache: its tokens (embeddings with the audio rows in place), audio, mask, positions. */
  prefill(c: DecoderContract, input: PrefillInput): Feeds {
    const n = input.ids.length;
    const feeds: Feeds = { [c.token.name]: this.tokens(c, input.ids, 1, c.token.kind === 'inputs_embeds' ? input.audio : undefined) };
    if (c.audio) feeds[c.audio.name] = this.audio(c, input.audio.rows);
    if (c.attentionMask) feeds[c.attentionMask] = new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
    if (c.positionIds) feeds[c.positionIds.name] = this.positions(c, [0], n);
    return feeds;
  }

  /** Encoder rows fed beside input_ids (graphs that embed the ids themselves). */
  audio(c: DecoderContract, rows: Tensor): Tensor {
    const a = c.audio!;
    const width = rows.dims[rows.dims.length - 1]!;
    const n = rows.size / width;
    const data = convertFloats(rows.data as Float32Array | Uint16Array, this.audioType, a.type);
    return new Tensor(a.type, data, a.rank === 3 ? [1, n, width] : [n, width]);
  }

  /** Position ids [B, S] (or [3, B, S]: MRoPE with identical rows is plain RoPE) from each row's first position. */
  positions(c: DecoderContract, starts: readonly number[], length: number): Tensor {
    const rows = starts.length;
    const data = new BigInt64Array(rows * length);
    starts.forEach((start, r) => {
      for (let i = 0; i < length; i++) data[r * length + i] = BigInt(start + i);
    });
    if (c.positionIds!.rank === 2) return new Tensor('int64', data, [rows, length]);
    const three = new BigInt64Array(3 * data.length);
    for (let k = 0; k < 3; k++) three.set(data, k * data.length);
    return new Tensor('int64', three, [3, rows, length]);
  }

  /** The greedy id of each row's last position: the graph's own greedy_ids, else the argmax of its logits. */
  nextIds(c: DecoderContract, outputs: Record<string, Tensor>, rows: number): number[] {
    if (c.greedyIds) return Array.from(outputs[c.greedyIds.name]!.data as BigInt64Array, Number);
    const logits = outputs[c.logits!.name]!;
    const vocab = logits.dims[logits.dims.length - 1]!;
    const perRow = logits.size / rows;
    return Array.from({ length: rows }, (_, r) => {
      const { id, value } = argmax(logits.data as Float32Array | Uint16Array, c.logits!.type, (r + 1) * perRow - vocab, vocab);
      if (!Number.isFinite(value)) throw new InferenceError(`${c.file} produced non-finite logits`);
      return id;
    });
  }
}

/** Bytes of the host tensors among these: what JavaScript hands a session or gets back (device tensors count 0). */
export function hostBytes(tensors: Iterable<Tensor | null | undefined>): number {
  let bytes = 0;
  for (const t of tensors) if (t && (t.location === 'cpu' || t.location === 'cpu-pinned')) bytes += (t.data as ArrayBufferView).byteLength;
  return bytes;
}

/** Throws unless every present.* of a prefill of `length` tokens is [1, heads, length, headDim]. */
export function checkPrefillCache(c: DecoderContract, present: readonly Tensor[], length: number, heads: number, headDim: number): void {
  const bad = present.find((t) => t.dims[0] !== 1 || t.dims[1] !== heads || t.dims[2] !== length || t.dims[3] !== headDim);
  if (bad) {
    throw new InferenceError(`${c.file} returned a cache of shape [${bad.dims.join(', ')}] for ${length} prompt tokens; expected [1, ${heads}, ${length}, ${headDim}]`);
  }
}

function argmax(data: Float32Array | Uint16Array, type: FloatType, offset: number, length: number): { id: number; value: number } {
  let best = 0;
  let bestValue = -Infinity;
  // Two loops rather than a branch per element: this runs over the whole vocabulary every step.
  if (type === 'float32') {
    for (let i = 0; i < length; i++) {
      const v = data[offset + i]!;
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
  } else {
    const lut = float16Table();
    for (let i = 0; i < length; i++) {
      const v = lut[data[offset + i]!]!;
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
  }
  return { id: best, value: bestValue };
}
