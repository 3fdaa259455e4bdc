import type { Tensor } from 'onnxruntime-node';
import { InferenceError } from './errors.js';

/*
 * The decoder backend: the only code that knows where and how a sequence's KV cache is stored. The generation
 * loop hands it prompts and tokens and gets token ids back; it never sees, reads or copies cache data, so a
 * backend whose cache never leaves the GPU (and is never readable from JavaScript) plugs in behind the same calls.
 */

/** What the decoder needs to start a sequence: the prompt's ids and the encoder rows that replace its audio pads. */
export interface PrefillInput {
  ids: readonly number[];
  /** encoder output rows (as the encoder returned them) for positions offset .. offset + rows - 1 */
  audio: { rows: Tensor; offset: number };
  /** the most positions the sequence can reach (prompt plus token budget): a backend may size its cache once */
  maxLength?: number;
}

/** A sequence's cache. Opaque: only the backend that made it knows what is behind it. */
export interface CacheHandle {
  /** positions held (prompt plus the tokens fed so far); the next token is fed at this position */
  readonly length: number;
}

export interface Prefilled {
  /** greedy id after the last prompt position */
  firstId: number;
  cache: CacheHandle;
}

export interface StepRow {
  cache: CacheHandle;
  /** the id this row generated last: fed at position cache.length and appended to its cache */
  token: number;
}

export interface StepResult {
  /** the next greedy id of each row, in the order of the rows */
  ids: number[];
  /** wall time inside the session run(s); the rest of a step's time is host cost */
  runMs: number;
}

export interface DecoderBackend {
  /** the most rows one step takes: 1 when the graphs' batch is fixed (then sequences decode one at a time) */
  readonly maxBatch: number;
  /** Runs the prompts (each on its own or together, as the backend likes) and returns one handle per input. */
  prefill(inputs: readonly PrefillInput[]): Promise<{ sequences: Prefilled[]; runMs: number }>;
  /**
   * One decode step for exactly these rows, in this order (at most maxBatch). Rows may differ from the last
   * step's: a handle fresh from prefill joins, a handle not listed any more has left the batch for good (it can
   * only be released).
   */
  step(rows: readonly StepRow[]): Promise<StepResult>;
  /** Frees the cache behind a handle (also mid-batch, on cancel or error); the handle is unusable after. */
  release(cache: CacheHandle): void;
  /** handles made and not yet released (tests prove none leak) */
  readonly liveHandles: number;
  /** Frees what the backend holds besides caches (device graphs, an uploaded table); the engine calls it last. */
  dispose(): Promise<void>;
}

/** What every backend's cache handle knows of itself: its length and whether it may still be stepped. */
export class SequenceCache implements CacheHandle {
  released = false;
  /** left the batch without being released: its cache is gone */
  dropped = false;
  constructor(public length: number) {}
}

/** `cache` as this backend's own kind of handle, refused when it is another backend's or may not be stepped. */
export function ownCache<T extends SequenceCache>(cache: CacheHandle, kind: abstract new (...args: never[]) => T, releasedOk = false): T {
  if (!(cache instanceof kind)) throw new InferenceError('a cache handle from another backend');
  if (cache.released && !releasedOk) throw new InferenceError('a released cache handle was stepped');
  if (cache.dropped && !releasedOk) throw new InferenceError('a cache handle that left the batch was stepped again');
  return cache;
}

/** Prefills one prompt after the other, timing the runs; on a failure the sequences already made are released. */
export async function prefillEach(
  inputs: readonly PrefillInput[],
  one: (input: PrefillInput) => Promise<Prefilled>,
  release: (cache: CacheHandle) => void,
): Promise<{ sequences: Prefilled[]; runMs: number }> {
  const sequences: Prefilled[] = [];
  let runMs = 0;
  try {
    for (const input of inputs) {
      const t0 = performance.now();
      sequences.push(await one(input));
      runMs += performance.now() - t0;
    }
  } catch (err) {
    for (const s of sequences) release(s.cache);
    throw err;
  }
  return { sequences, runMs };
}

// The engine's backend is `engine.backend` (AsrEngine.load builds it from the model's graphs): a benchmark drives
// prefill/step/release on it directly, with audio rows of the encoder's output type (engine.encoderContract.output).
