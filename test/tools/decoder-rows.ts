/**
 * Drives a generated model's decoder graphs by hand, several sequences in one batch with left padding, without
 * the engine: hand-built feeds, so a test can tamper with exactly one thing and see which rows notice.
 */
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { EmbeddingLookup, findEmbeddingFiles, readEmbeddingTable } from '../../src/asr/embeddings.js';
import { float32ToFloat16Bits } from '../../src/asr/half.js';
import { buildPrompt, nAudioTokens } from '../../src/asr/prompt.js';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { mulberry32 } from '../../tools/random.js';

type Feeds = Record<string, Tensor>;

/** A tensor input's declared element type and shape (the first input when no name is given). */
export function inputMeta(session: InferenceSession, name?: string): { name: string; type: string; shape: readonly (number | string)[] } {
  const m = name === undefined ? session.inputMetadata[0] : session.inputMetadata.find((i) => i.name === name);
  if (!m?.isTensor) throw new Error(`no tensor input ${name ?? '(first)'}`);
  return m;
}

/** One sequence's prompt with its audio rows already in place (what a prefill row needs). */
export interface SequenceInput {
  ids: number[];
  /** [ids.length * hidden] float32 embeddings, audio rows included */
  embeds: Float32Array;
}

export interface FixtureDecoder {
  readonly tokenizer: Tokenizer;
  readonly hidden: number;
  /** A prompt for `frames` mel frames of constant loudness (the loudness picks the fixture's sentence). */
  sequence(frames: number, loudness: number): Promise<SequenceInput>;
  embed(id: number): Float32Array;
  prefill: InferenceSession;
  step: InferenceSession;
  release(): Promise<void>;
}

export async function openFixtureDecoder(dir: string): Promise<FixtureDecoder> {
  const tokenizer = Tokenizer.fromModelDir(dir);
  const table = new EmbeddingLookup(readEmbeddingTable(findEmbeddingFiles(dir)[0]!));
  const hidden = table.hiddenSize;
  const [encoder, prefill, step] = await Promise.all(
    [FIXTURE_FILES.encoder, FIXTURE_FILES.prefill, FIXTURE_FILES.step].map((f) => InferenceSession.create(`${dir}/${f}`)),
  );
  const embed = (id: number) => {
    const row = new Float32Array(hidden);
    table.rowToFloat32(id, row, 0);
    return row;
  };
  return {
    tokenizer,
    hidden,
    embed,
    prefill: prefill!,
    step: step!,
    async sequence(frames, loudness) {
      const input = inputMeta(encoder!);
      const dims = input.shape.length === 3 ? [1, 128, frames] : [128, frames];
      const out = await encoder!.run({ [input.name]: new Tensor('float32', new Float32Array(128 * frames).fill(loudness), dims) });
      const rows = out[encoder!.outputNames[0]!]!.data as Float32Array;
      const prompt = buildPrompt(tokenizer, { nAudioTokens: nAudioTokens(frames) });
      const embeds = new Float32Array(prompt.ids.length * hidden);
      prompt.ids.forEach((id, i) => embeds.set(embed(id), i * hidden));
      embeds.set(rows, prompt.audioOffset * hidden);
      return { ids: prompt.ids, embeds };
    },
    async release() {
      await Promise.all([encoder!.release(), prefill!.release(), step!.release()]);
    },
  };
}

/** Feeds of one decoder call, before the graph's own element types and ranks are applied. */
export interface BatchFeeds {
  /** [B, S, hidden] */
  embeds: Float32Array;
  /** [B, S] */
  positions: number[];
  /** [B, total] */
  mask: number[];
  past: Map<string, Tensor>;
  rows: number;
  length: number;
}

export interface DecodeOptions {
  steps: number;
  /** Alters a step's feeds (step index from 0, after the prefill); returns the feeds to run. */
  tamper?: (step: number, feeds: BatchFeeds) => BatchFeeds;
  /** Sees each call's logits (-1: the prefill's). */
  logits?: (step: number, logits: Tensor) => void;
}

const GARBAGE = mulberry32(99);
const garbage = () => (GARBAGE() * 2 - 1) * 5;

function typedFeeds(session: InferenceSession, f: BatchFeeds): Feeds {
  const meta = (name: string) => inputMeta(session, name);
  const embedsMeta = meta('inputs_embeds');
  const embeds =
    embedsMeta.type === 'float16'
      ? new Tensor('float16', Uint16Array.from(f.embeds, float32ToFloat16Bits), [f.rows, f.length, f.embeds.length / f.rows / f.length])
      : new Tensor('float32', f.embeds, [f.rows, f.length, f.embeds.length / f.rows / f.length]);
  const int64 = (v: number[], dims: number[]) => new Tensor('int64', BigInt64Array.from(v, (x) => BigInt(x)), dims);
  const positions =
    meta('position_ids').shape.length === 3
      ? int64([...f.positions, ...f.positions, ...f.positions], [3, f.rows, f.length])
      : int64(f.positions, [f.rows, f.length]);
  const feeds: Feeds = {
    inputs_embeds: embeds,
    position_ids: positions,
    attention_mask: int64(f.mask, [f.rows, f.mask.length / f.rows]),
  };
  for (const [name, t] of f.past) feeds[name] = t;
  return feeds;
}

function lastArgmax(logits: Tensor, rows: number): number[] {
  const vocab = logits.dims[2]!;
  const perRow = logits.size / rows;
  const data = logits.data as Float32Array;
  return Array.from({ length: rows }, (_, r) => {
    let best = 0;
    const base = r * perRow + perRow - vocab;
    for (let i = 1; i < vocab; i++) if (data[base + i]! > data[base + best]!) best = i;
    return best;
  });
}

/** Present outputs renamed as the step's past inputs. */
function pastFrom(outputs: InferenceSession.OnnxValueMapType): Map<string, Tensor> {
  const past = new Map<string, Tensor>();
  for (const [name, value] of Object.entries(outputs)) {
    if (name.startsWith('present.')) past.set(name.replace('present.', 'past_key_values.'), value as Tensor);
  }
  return past;
}

/**
 * Greedy decoding of `sequences` as one batch: prompts left-padded to the longest (pad positions get random
 * garbage embeddings and position ids, mask 0), then `steps` one-token steps. Returns each row's tokens,
 * the first from the prefill.
 */
export async function decodeBatch(d: FixtureDecoder, sequences: SequenceInput[], o: DecodeOptions): Promise<number[][]> {
  const rows = sequences.length;
  const width = Math.max(...sequences.map((s) => s.ids.length));
  const pads = sequences.map((s) => width - s.ids.length);
  const embeds = new Float32Array(rows * width * d.hidden);
  const positions: number[] = [];
  const mask: number[] = [];
  sequences.forEach((s, r) => {
    for (let i = 0; i < pads[r]! * d.hidden; i++) embeds[r * width * d.hidden + i] = garbage();
    embeds.set(s.embeds, (r * width + pads[r]!) * d.hidden);
    for (let i = 0; i < width; i++) {
      const real = i >= pads[r]!;
      positions.push(real ? i - pads[r]! : Math.floor(GARBAGE() * 100));
      mask.push(real ? 1 : 0);
    }
  });
  let outputs = await d.prefill.run(typedFeeds(d.prefill, { embeds, positions, mask, past: new Map(), rows, length: width }));
  o.logits?.(-1, outputs.logits as Tensor);
  let next = lastArgmax(outputs.logits as Tensor, rows);
  const tokens = next.map((t) => [t]);
  const masks = sequences.map((_, r) => mask.slice(r * width, (r + 1) * width));
  for (let step = 0; step < o.steps; step++) {
    masks.forEach((m) => m.push(1));
    let feeds: BatchFeeds = {
      embeds: new Float32Array(rows * d.hidden),
      positions: sequences.map((s) => s.ids.length + step),
      mask: masks.flat(),
      past: pastFrom(outputs),
      rows,
      length: 1,
    };
    next.forEach((id, r) => feeds.embeds.set(d.embed(id), r * d.hidden));
    if (o.tamper) feeds = o.tamper(step, feeds);
    outputs = await d.step.run(typedFeeds(d.step, feeds));
    o.logits?.(step, outputs.logits as Tensor);
    next = lastArgmax(outputs.logits as Tensor, rows);
    next.forEach((t, r) => tokens[r]!.push(t));
  }
  return tokens;
}

/**
 * A copy of a [B, heads, L, dim] cache tensor (float32 or float16 bits) after `edit`, which gets the raw
 * values and a function giving the offset of (row, head, column).
 */
export function editCache(
  t: Tensor,
  edit: (values: Float32Array | Uint16Array, at: (row: number, head: number, column: number) => number, dims: readonly number[]) => void,
): Tensor {
  const values = t.type === 'float32' ? Float32Array.from(t.data as Float32Array) : Uint16Array.from(t.data as Uint16Array);
  const [, heads, length, dim] = t.dims as [number, number, number, number];
  edit(values, (row, head, column) => ((row * heads + head) * length + column) * dim, t.dims);
  return new Tensor(t.type as 'float32' | 'float16', values, t.dims);
}

/** The feeds with every past tensor changed by `change`. */
export function mapPast(f: BatchFeeds, change: (t: Tensor) => Tensor): BatchFeeds {
  return { ...f, past: new Map([...f.past].map(([name, t]) => [name, change(t)])) };
}

/** The cache with rows a and b exchanged. */
export function swapRows(t: Tensor, a: number, b: number): Tensor {
  return editCache(t, (values, at) => {
    const size = at(1, 0, 0);
    const rowA = values.slice(at(a, 0, 0), at(a, 0, 0) + size);
    values.copyWithin(at(a, 0, 0), at(b, 0, 0), at(b, 0, 0) + size);
    values.set(rowA, at(b, 0, 0));
  });
}
