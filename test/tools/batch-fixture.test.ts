import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORRUPT_TEXT, FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from '../support/fixture-models.js';
import { decodeBatch, editCache, inputMeta, mapPast, openFixtureDecoder, swapRows, type BatchFeeds, type FixtureDecoder, type SequenceInput } from './decoder-rows.js';

const STEPS = 14;
/** The step at which a fault is injected: past the shared "language English<asr_text>" prefix. */
const FAULT_AT = 6;

/** Three prompts of different lengths (ragged left padding) speaking three different sentences. */
const SHAPES: [frames: number, loudness: number][] = [
  [420, 1.1],
  [300, -0.6],
  [180, 0.35],
];

describe.each(['default', 'fp16-kv'] as const)('the %s fixture decoders at batch 3', (variant) => {
  let d: FixtureDecoder;
  let seqs: SequenceInput[];
  let alone: number[][];
  let corrupt: number;

  beforeAll(async () => {
    d = await openFixtureDecoder(fixtureModel(variant));
    seqs = await Promise.all(SHAPES.map(([frames, loudness]) => d.sequence(frames, loudness)));
    alone = await Promise.all(seqs.map(async (s) => (await decodeBatch(d, [s], { steps: STEPS }))[0]!));
    corrupt = d.tokenizer.encode(CORRUPT_TEXT)[0]!;
  });
  afterAll(async () => d.release());

  const text = (tokens: number[]) => d.tokenizer.decode(tokens);
  /** Runs the batch with one fault at FAULT_AT; returns which rows went wrong, after checking how. */
  const faultyRows = async (tamper: (f: BatchFeeds) => BatchFeeds) => {
    const rows = await decodeBatch(d, seqs, { steps: STEPS, tamper: (step, f) => (step === FAULT_AT ? tamper(f) : f) });
    return rows.flatMap((tokens, r) => {
      if (tokens.join() === alone[r]!.join()) return [];
      // Right up to the fault, CORRUPT from it on (the corrupt token fed back keeps it so).
      expect(tokens.slice(0, FAULT_AT + 1)).toEqual(alone[r]!.slice(0, FAULT_AT + 1));
      expect(tokens.slice(FAULT_AT + 1)).toEqual(Array(STEPS - FAULT_AT).fill(corrupt));
      return [r];
    });
  };

  it('each row alone says its own sentence and the rows differ', () => {
    const sentences = alone.map((tokens) => FIXTURE_SENTENCES.find((s) => text(tokens).includes(s.slice(0, 12))));
    expect(sentences.every((s) => s !== undefined)).toBe(true);
    expect(new Set(sentences).size).toBe(3);
    expect(new Set(seqs.map((s) => s.ids.length)).size).toBe(3);
  });

  it('each row of a ragged left-padded batch decodes exactly as it does alone', async () => {
    expect(await decodeBatch(d, seqs, { steps: STEPS })).toEqual(alone);
  });

  it('garbage under the mask is ignored, NaN included', async () => {
    const nanUnderMask = (f: BatchFeeds) =>
      mapPast(f, (t) =>
        editCache(t, (values, at, dims) => {
          // Rows 1 and 2 are padded on the left: overwrite their masked columns.
          for (const row of [1, 2]) {
            const padded = f.mask.slice(row * (dims[2]! + 1), (row + 1) * (dims[2]! + 1)).indexOf(1);
            for (let h = 0; h < dims[1]!; h++) values.fill(t.type === 'float32' ? NaN : 0x7e00, at(row, h, 0), at(row, h, padded));
          }
        }),
      );
    expect(await faultyRows(nanUnderMask)).toEqual([]);
  });

  it('rows 0 and 2 swapped in the cache corrupt exactly those rows', async () => {
    expect(await faultyRows((f) => mapPast(f, (t) => swapRows(t, 0, 2)))).toEqual([0, 2]);
  });

  it('a mask off by one for row 1, either way, corrupts row 1 only', async () => {
    const shifted = (by: -1 | 1) => (f: BatchFeeds) => {
      const width = f.mask.length / f.rows;
      const mask = [...f.mask];
      const first = mask.indexOf(1, width) - width;
      mask[width + (by === -1 ? first - 1 : first)] = by === -1 ? 1 : 0;
      return { ...f, mask };
    };
    expect(await faultyRows(shifted(-1))).toEqual([1]);
    expect(await faultyRows(shifted(1))).toEqual([1]);
  });

  it('a wrong position id for row 2 corrupts row 2 only', async () => {
    expect(await faultyRows((f) => ({ ...f, positions: f.positions.map((p, r) => (r === 2 ? p + 1 : p)) }))).toEqual([2]);
  });

  it('an unmasked pad column corrupts its row, whether its garbage is zeros or not', async () => {
    const unmaskFirst = (row: number) => (f: BatchFeeds) => {
      const width = f.mask.length / f.rows;
      const mask = [...f.mask];
      mask[row * width] = 1;
      return { ...f, mask };
    };
    expect(await faultyRows(unmaskFirst(2))).toEqual([2]);
    const zeroed = (f: BatchFeeds) =>
      mapPast(unmaskFirst(1)(f), (t) =>
        editCache(t, (v, at, dims) => {
          for (let h = 0; h < dims[1]!; h++) v.fill(0, at(1, h, 0), at(1, h, 1));
        }),
      );
    expect(await faultyRows(zeroed)).toEqual([1]);
  });

  it('a stale cache column (one real column replaced by its neighbour) corrupts its row only', async () => {
    const stale = (f: BatchFeeds) =>
      mapPast(f, (t) =>
        editCache(t, (v, at, dims) => {
          const last = dims[2]! - 1;
          for (let h = 0; h < dims[1]!; h++) v.copyWithin(at(0, h, last), at(0, h, last - 1), at(0, h, last));
        }),
      );
    expect(await faultyRows(stale)).toEqual([0]);
  });
});

describe('a cache row of another sequence of the same length', () => {
  it('is caught by the token the row is fed, once the two sentences differ', async () => {
    const d = await openFixtureDecoder(fixtureModel('default'));
    try {
      const [a, b] = await Promise.all([d.sequence(300, 1.1), d.sequence(300, -0.6)]);
      expect(a!.ids).toEqual(b!.ids);
      const alone = await Promise.all([a!, b!].map(async (s) => (await decodeBatch(d, [s], { steps: STEPS }))[0]!));
      const differFrom = alone[0]!.findIndex((t, i) => t !== alone[1]![i]);
      expect(differFrom).toBeGreaterThan(0);
      expect(differFrom).toBeLessThan(FAULT_AT);
      const corrupt = d.tokenizer.encode(CORRUPT_TEXT)[0]!;
      const rows = await decodeBatch(d, [a!, b!], {
        steps: STEPS,
        tamper: (step, f) => (step === FAULT_AT ? mapPast(f, (t) => swapRows(t, 0, 1)) : f),
      });
      for (const r of [0, 1]) {
        expect(rows[r]!.slice(0, FAULT_AT + 1)).toEqual(alone[r]!.slice(0, FAULT_AT + 1));
        expect(rows[r]!.slice(FAULT_AT + 1)).toEqual(Array(STEPS - FAULT_AT).fill(corrupt));
      }
    } finally {
      await d.release();
    }
  });
});

describe('the batch1 fixture', () => {
  it('declares its decoders with a batch of literally 1 and refuses two rows', async () => {
    const d = await openFixtureDecoder(fixtureModel('batch1'));
    try {
      for (const session of [d.prefill, d.step]) {
        for (const name of session.inputNames) {
          const { shape } = inputMeta(session, name);
          expect(shape[name === 'position_ids' && shape.length === 3 ? 1 : 0]).toBe(1);
        }
      }
      const s = await d.sequence(200, 0.5);
      const one = await decodeBatch(d, [s], { steps: 4 });
      const reference = await openFixtureDecoder(fixtureModel('default'));
      try {
        expect(await decodeBatch(reference, [s], { steps: 4 })).toEqual(one);
      } finally {
        await reference.release();
      }
      await expect(decodeBatch(d, [s, s], { steps: 1 })).rejects.toThrow();
    } finally {
      await d.release();
    }
  });
});
