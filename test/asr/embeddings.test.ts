import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EmbeddingLookup,
  loadEmbeddingTableOnce,
  readEmbeddingTable,
  type EmbeddingDtype,
  type SharedEmbeddingTable,
} from '../../src/asr/embeddings.js';
import { ModelLoadError } from '../../src/asr/errors.js';
import { bfloat16BitsToFloat32, float16Table, float32ToBfloat16Bits, float32ToFloat16Bits } from '../../src/asr/half.js';
import { writeNpy, writeSafetensors } from '../../tools/fixture/embedding-files.js';

const ROWS = 50;
const COLS = 8;
const SHAPE: [number, number] = [ROWS, COLS];

/** Deterministic values of magnitude 2^-8..2^3 (normal in float16 and bfloat16), both signs. */
function randomTable(seed: number): Float32Array {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const values = new Float32Array(ROWS * COLS);
  for (let i = 0; i < values.length; i++) values[i] = (next() < 0.5 ? -1 : 1) * 2 ** (-8 + 11 * next());
  return values;
}

const source = randomTable(12345);

let dir: string;
const files: Record<string, { path: string; dtype: EmbeddingDtype }> = {};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'asr-embed-'));
  const add = (key: string, dtype: EmbeddingDtype, write: (path: string) => void) => {
    const path = join(dir, key);
    write(path);
    files[key] = { path, dtype };
  };
  add('f32.npy', 'float32', (p) => writeNpy(p, source, SHAPE, 'float32'));
  add('f16.npy', 'float16', (p) => writeNpy(p, source, SHAPE, 'float16'));
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    add(`${dtype}.safetensors`, dtype, (p) => writeSafetensors(p, 'thinker.model.embed_tokens.weight', source, SHAPE, dtype));
  }
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const CASES = ['f32.npy', 'f16.npy', 'float32.safetensors', 'float16.safetensors', 'bfloat16.safetensors'];

/** Largest relative error each stored precision may add (round to nearest, normal range). */
const TOLERANCE: Record<EmbeddingDtype, number> = { float32: 0, float16: 2 ** -11, bfloat16: 2 ** -8 };

describe('readEmbeddingTable', () => {
  it.each(CASES)('%s: stored dtype in a SharedArrayBuffer, not widened', (key) => {
    const { path, dtype } = files[key]!;
    const table = readEmbeddingTable(path);
    expect(table.source).toBe(path);
    expect(table.dtype).toBe(dtype);
    expect([table.rows, table.cols]).toEqual(SHAPE);
    expect(table.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(table.buffer.byteLength).toBe(ROWS * COLS * (dtype === 'float32' ? 4 : 2));
  });

  it.each(CASES)('%s: rowToFloat32 gives the source values within the stored precision', (key) => {
    const { path, dtype } = files[key]!;
    const lookup = new EmbeddingLookup(readEmbeddingTable(path));
    expect(lookup.hiddenSize).toBe(COLS);
    const offset = 3;
    const target = new Float32Array(offset + COLS + 2).fill(-999);
    let worst = 0;
    for (let id = 0; id < ROWS; id++) {
      lookup.rowToFloat32(id, target, offset);
      expect(target[offset - 1]).toBe(-999);
      expect(target[offset + COLS]).toBe(-999);
      for (let c = 0; c < COLS; c++) {
        const want = source[id * COLS + c]!;
        const got = target[offset + c]!;
        if (dtype === 'float32') expect(got).toBe(want);
        // exactly the value the writer stored
        if (dtype === 'float16') expect(got).toBe(float16Table()[float32ToFloat16Bits(want)]);
        if (dtype === 'bfloat16') expect(got).toBe(bfloat16BitsToFloat32(float32ToBfloat16Bits(want)));
        worst = Math.max(worst, Math.abs(got - want) / Math.abs(want));
      }
    }
    expect(worst).toBeLessThanOrEqual(TOLERANCE[dtype]);
    if (dtype !== 'float32') expect(worst).toBeGreaterThan(0); // the values really went through 16 bits
  });

  it.each(CASES)('%s: rowToFloat16 is the float16 rounding of the stored row', (key) => {
    const { path, dtype } = files[key]!;
    const lookup = new EmbeddingLookup(readEmbeddingTable(path));
    const f32 = new Float32Array(COLS);
    const bits = new Uint16Array(COLS + 1);
    const lut = float16Table();
    for (let id = 0; id < ROWS; id++) {
      lookup.rowToFloat32(id, f32, 0);
      lookup.rowToFloat16(id, bits, 1);
      for (let c = 0; c < COLS; c++) {
        const h = bits[1 + c]!;
        expect(h).toBe(float32ToFloat16Bits(f32[c]!));
        if (dtype === 'float16') expect(lut[h]).toBe(f32[c]); // lossless round trip
        else expect(Math.abs(lut[h]! - f32[c]!)).toBeLessThanOrEqual(Math.abs(f32[c]!) * 2 ** -11);
      }
    }
    expect(bits[0]).toBe(0);
  });

  it('picks the embedding tensor by name beside a 2-D decoy', () => {
    const path = join(dir, 'named.safetensors');
    writeSafetensorsRaw(path, [
      { name: 'thinker.lm_head.weight', dtype: 'F32', shape: [2, 3], data: new Float32Array([9, 9, 9, 9, 9, 9]) },
      { name: 'model.embed_tokens.weight', dtype: 'F32', shape: [3, 2], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    ]);
    const table = readEmbeddingTable(path);
    expect([table.rows, table.cols, table.dtype]).toEqual([3, 2, 'float32']);
    expect(Array.from(new Float32Array(table.buffer))).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('loadEmbeddingTableOnce returns the same table for the same file', () => {
    const path = files['float16.safetensors']!.path;
    const a = loadEmbeddingTableOnce(path);
    const b = loadEmbeddingTableOnce(path);
    expect(b).toBe(a);
    expect(b.buffer).toBe(a.buffer);
    expect(loadEmbeddingTableOnce(files['f16.npy']!.path)).not.toBe(a);
  });

  it('throws RangeError for ids outside the table', () => {
    const lookup = new EmbeddingLookup(readEmbeddingTable(files['f32.npy']!.path));
    const lookup16 = new EmbeddingLookup(readEmbeddingTable(files['f16.npy']!.path));
    for (const id of [-1, ROWS, ROWS + 100, 1.5, Number.NaN]) {
      expect(() => lookup.rowToFloat32(id, new Float32Array(COLS), 0), String(id)).toThrow(RangeError);
      expect(() => lookup.rowToFloat16(id, new Uint16Array(COLS), 0), String(id)).toThrow(RangeError);
      expect(() => lookup16.rowToFloat32(id, new Float32Array(COLS), 0), String(id)).toThrow(RangeError);
    }
    expect(() => lookup.rowToFloat32(ROWS - 1, new Float32Array(COLS), 0)).not.toThrow();
  });
});

interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Float32Array;
}

/** safetensors with exactly the tensors given. */
function writeSafetensorsRaw(path: string, tensors: RawTensor[]): void {
  const header: Record<string, unknown> = {};
  const blobs: Buffer[] = [];
  let offset = 0;
  for (const t of tensors) {
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    blobs.push(bytes);
    offset += bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([length, json, ...blobs]));
}

function expectLoadError(path: string, message: RegExp): void {
  let error: unknown;
  try {
    readEmbeddingTable(path);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(ModelLoadError);
  expect((error as Error).message.startsWith(`${path}: `)).toBe(true);
  expect((error as Error).message).toMatch(message);
}

describe('readEmbeddingTable errors', () => {
  it('rejects a truncated .npy and a truncated .safetensors', () => {
    for (const key of ['f32.npy', 'bfloat16.safetensors']) {
      const whole = readFileSync(files[key]!.path);
      const path = join(dir, `truncated-${key}`);
      writeFileSync(path, whole.subarray(0, whole.length - 7));
      expectLoadError(path, /needs \d+ bytes, file holds \d+/);
    }
  });

  it('rejects a file cut inside its header', () => {
    const path = join(dir, 'stub.npy');
    writeFileSync(path, readFileSync(files['f32.npy']!.path).subarray(0, 5));
    expectLoadError(path, /end of file/);
  });

  it('rejects a 3-D .npy', () => {
    const path = join(dir, 'cube.npy');
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }";
    header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
    const preamble = Buffer.alloc(10);
    preamble.write('\x93NUMPY', 0, 'latin1');
    preamble[6] = 1;
    preamble.writeUInt16LE(header.length, 8);
    writeFileSync(path, Buffer.concat([preamble, Buffer.from(header, 'latin1'), Buffer.alloc(2 * 3 * 4 * 4)]));
    expectLoadError(path, /2-D embedding table.*\[2, 3, 4\]/);
  });

  it('rejects an unsupported .npy dtype', () => {
    const path = join(dir, 'f64.npy');
    const bytes = readFileSync(files['f32.npy']!.path);
    writeFileSync(path, Buffer.from(bytes.toString('latin1').replace("'<f4'", "'<f8'"), 'latin1'));
    expectLoadError(path, /unsupported \.npy dtype <f8/);
  });

  it('rejects a safetensors with two ambiguous 2-D tensors', () => {
    const path = join(dir, 'ambiguous.safetensors');
    writeSafetensorsRaw(path, [
      { name: 'a.weight', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
      { name: 'b.weight', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
    ]);
    expectLoadError(path, /cannot tell which tensor.*a\.weight, b\.weight/);
    const twoEmbeds = join(dir, 'two-embeds.safetensors');
    writeSafetensorsRaw(twoEmbeds, [
      { name: 'embed_tokens.weight', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
      { name: 'audio.embed_positions', dtype: 'F32', shape: [2, 2], data: new Float32Array(4) },
    ]);
    expectLoadError(twoEmbeds, /cannot tell which tensor/);
  });
});

describe('sharing across threads', () => {
  const WORKER = `
    const { parentPort, workerData } = require('node:worker_threads');
    const view = new Float32Array(workerData.buffer);
    parentPort.postMessage({ step: 'started', value: view[3], dtype: workerData.dtype, rows: workerData.rows });
    parentPort.once('message', () => {
      const seen = view[3];
      view[4] = -7.25;
      parentPort.postMessage({ step: 'seen', value: seen });
    });
  `;

  it('hands the table to a worker by reference', async () => {
    // a private copy, so the writes below do not touch tables other tests use
    const table: SharedEmbeddingTable = readEmbeddingTable(files['f32.npy']!.path);
    const view = new Float32Array(table.buffer);
    const original = view[3]!;
    expect(original).toBe(source[3]);
    const worker = new Worker(WORKER, { eval: true, workerData: table });
    try {
      const messages: { step: string; value: number; dtype?: string; rows?: number }[] = [];
      const seen = await new Promise<number>((resolve, reject) => {
        worker.on('error', reject);
        worker.on('exit', (code) => reject(new Error(`worker exited early with ${code}`)));
        worker.on('message', (m: { step: string; value: number }) => {
          messages.push(m);
          if (m.step === 'started') {
            view[3] = 4242.5; // written after the worker has its view
            worker.postMessage('look');
          } else resolve(m.value);
        });
      });
      expect(messages[0]).toEqual({ step: 'started', value: original, dtype: 'float32', rows: ROWS });
      expect(seen).toBe(4242.5);
      expect(view[4]).toBe(-7.25); // and the worker's write is visible here
    } finally {
      worker.removeAllListeners('exit');
      await worker.terminate();
    }
  });
});

describe('half', () => {
  it('converts float32 to float16 bits', () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00);
    expect(float32ToFloat16Bits(-2)).toBe(0xc000);
    expect(float32ToFloat16Bits(0.5)).toBe(0x3800);
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65519)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // halfway to 65536 rounds to even: infinity
    expect(float32ToFloat16Bits(1e6)).toBe(0x7c00);
    expect(float32ToFloat16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(float32ToFloat16Bits(2 ** -15)).toBe(0x0200); // subnormal
    expect(float32ToFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float32ToFloat16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 ulp: ties to even
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000); // half the smallest subnormal: ties to even (0)
    expect(float32ToFloat16Bits(1e-8)).toBe(0x0000);
    expect(float32ToFloat16Bits(-1e-8)).toBe(0x8000);
    expect(float32ToFloat16Bits(0)).toBe(0x0000);
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
    expect(float32ToFloat16Bits(Infinity)).toBe(0x7c00);
    expect(float32ToFloat16Bits(-Infinity)).toBe(0xfc00);
    const nan = float32ToFloat16Bits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
    expect(float16Table()[nan]).toBeNaN();
  });

  it('rounds float32 to float16 to nearest even', () => {
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie, even below
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, even above
    expect(float32ToFloat16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(float32ToFloat16Bits(2047.99)).toBe(0x6800); // carries into the exponent: 2048
  });

  it('float16Table maps every finite bit pattern back to itself', () => {
    const table = float16Table();
    expect(table).toHaveLength(65536);
    expect(table[0x3c00]).toBe(1);
    expect(table[0xc000]).toBe(-2);
    expect(table[0x7bff]).toBe(65504);
    expect(table[0x0001]).toBe(2 ** -24);
    expect(table[0x7c00]).toBe(Infinity);
    expect(table[0xfc00]).toBe(-Infinity);
    expect(Object.is(table[0x8000], -0)).toBe(true);
    let nans = 0;
    for (let h = 0; h < 65536; h++) {
      const v = table[h]!;
      if (Number.isNaN(v)) {
        nans++;
        expect(h & 0x7c00).toBe(0x7c00);
        continue;
      }
      if (float32ToFloat16Bits(v) !== h) expect(float32ToFloat16Bits(v), `bits ${h.toString(16)}`).toBe(h);
    }
    expect(nans).toBe(2 * 1023);
  });

  it('converts float32 to bfloat16 with round to nearest even', () => {
    expect(float32ToBfloat16Bits(1)).toBe(0x3f80);
    expect(float32ToBfloat16Bits(-2)).toBe(0xc000);
    expect(float32ToBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie, even below
    expect(float32ToBfloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie, even above
    expect(float32ToBfloat16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie
    expect(float32ToBfloat16Bits(1 + 2 ** -8 - 2 ** -20)).toBe(0x3f80); // below the tie
    expect(float32ToBfloat16Bits(Infinity)).toBe(0x7f80);
    expect(float32ToBfloat16Bits(-Infinity)).toBe(0xff80);
    expect(float32ToBfloat16Bits(3.4028234663852886e38)).toBe(0x7f80); // max float32 rounds up to infinity
    expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN)))).toBe(true);
    expect(bfloat16BitsToFloat32(0x3f81)).toBe(1 + 2 ** -7);
    expect(bfloat16BitsToFloat32(0xc000)).toBe(-2);
    for (let b = 0; b < 65536; b++) {
      const v = bfloat16BitsToFloat32(b);
      if (!Number.isNaN(v) && float32ToBfloat16Bits(v) !== b) expect(float32ToBfloat16Bits(v), `bits ${b.toString(16)}`).toBe(b);
    }
  });
});
