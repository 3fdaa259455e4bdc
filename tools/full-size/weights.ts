import { closeSync, openSync, writeSync } from 'node:fs';
import type { ElemType, ExternalRef } from '../onnx-graph.js';

/**
 * xoshiro128** seeded through splitmix32: 32 random bits per call at a few nanoseconds, so a gigabyte of
 * weights is a matter of seconds and the same seed always gives the same model.
 */
export class FastRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    [this.a, this.b, this.c, this.d] = [next(), next(), next(), next()];
  }

  fill(words: Uint32Array): void {
    let { a, b, c, d } = this;
    for (let i = 0; i < words.length; i++) {
      const m = Math.imul(b, 5);
      words[i] = Math.imul((m << 7) | (m >>> 25), 9);
      const t = b << 9;
      c ^= a;
      d ^= b;
      b ^= c;
      a ^= d;
      c ^= t;
      d = (d << 11) | (d >>> 21);
    }
    Object.assign(this, { a, b, c, d });
  }
}

/**
 * How random 32-bit words become values: raw bytes (packed 4-bit codes, zero points), or IEEE floats whose
 * exponent is fixed so the magnitude lies in [2^e, 2^(e+1)) (random mantissa, optionally random sign).
 * Bit masks instead of arithmetic keep generation at memory speed.
 */
export type Fill = { kind: 'bytes' } | { kind: 'float32'; exponent: number; signed: boolean } | { kind: 'bfloat16'; exponent: number };

function shape(words: Uint32Array, fill: Fill): void {
  if (fill.kind === 'bytes') return;
  if (fill.kind === 'float32') {
    const keep = fill.signed ? 0x807fffff : 0x007fffff;
    const exp = ((127 + fill.exponent) << 23) >>> 0;
    for (let i = 0; i < words.length; i++) words[i] = ((words[i]! & keep) | exp) >>> 0;
    return;
  }
  // Two bf16 values per word: sign, mantissa and the exponent's lowest bit random (magnitudes in [2^e, 2^(e+2))).
  if ((127 + fill.exponent) % 2 !== 0) throw new Error('bfloat16 fill: 127 + exponent must be even');
  const exp = (((127 + fill.exponent) << 7) * 0x10001) >>> 0;
  for (let i = 0; i < words.length; i++) words[i] = ((words[i]! & 0x80ff80ff) | exp) >>> 0;
}

const CHUNK_WORDS = 1 << 22;
const scratch = new Uint32Array(CHUNK_WORDS);

/** Writes `length` random bytes (a multiple of 4) at `position` of an open file, chunk by chunk. */
export function writeRandom(
  fd: number,
  position: number,
  length: number,
  random: FastRandom,
  fill: Fill,
  edit?: (bytes: Uint8Array, start: number) => void,
): void {
  if (length % 4 !== 0) throw new Error(`random tensor of ${length} bytes: a multiple of 4 expected`);
  for (let done = 0; done < length; ) {
    const n = Math.min(length - done, CHUNK_WORDS * 4);
    const words = scratch.subarray(0, n / 4);
    random.fill(words);
    shape(words, fill);
    const bytes = new Uint8Array(words.buffer, 0, n);
    edit?.(bytes, done);
    writeSync(fd, bytes, 0, n, position + done);
    done += n;
  }
}

/** An external data file written tensor by tensor (64-byte aligned, as exporters lay them out). */
export class WeightFile {
  private readonly fd: number;
  private offset = 0;
  private readonly constants = new Map<string, ExternalRef>();

  constructor(
    path: string,
    /** the file name graphs refer to (relative to the .onnx file) */
    readonly location: string,
    private readonly rng: FastRandom,
  ) {
    this.fd = openSync(path, 'w');
  }

  get bytes(): number {
    return this.offset;
  }

  private reserve(length: number): number {
    this.offset += (64 - (this.offset % 64)) % 64;
    const at = this.offset;
    this.offset += length;
    return at;
  }

  /** A tensor of random values; `edit` may change a chunk's bytes (absolute byte offset `start` in the tensor). */
  tensor(type: ElemType, dims: number[], fill: Fill, edit?: (bytes: Uint8Array, start: number) => void): ExternalRef {
    const size = { float32: 4, float16: 2, int64: 8, bool: 1, uint8: 1 }[type];
    const length = dims.reduce((a, b) => a * b, 1) * size;
    const at = this.reserve(length);
    writeRandom(this.fd, at, length, this.rng, fill, edit);
    return { type, dims, location: this.location, offset: at, length };
  }

  /** A tensor of given values, written once per key however many graphs use it. */
  constant(key: string, type: ElemType, dims: number[], data: Float32Array | Uint8Array): ExternalRef {
    const known = this.constants.get(key);
    if (known) return known;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const at = this.reserve(bytes.length);
    writeSync(this.fd, bytes, 0, bytes.length, at);
    const ref = { type, dims, location: this.location, offset: at, length: bytes.length };
    this.constants.set(key, ref);
    return ref;
  }

  close(): void {
    closeSync(this.fd);
  }
}
