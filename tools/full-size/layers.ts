import type { ExternalRef, GraphBuilder } from '../onnx-graph.js';
import type { WeightFile } from './weights.js';

/** Weights of one Linear as the onnxruntime 4-bit quantizer writes them (asymmetric, block 32). */
export interface QuantLinear {
  name: string;
  k: number;
  n: number;
  weight: ExternalRef;
  scales: ExternalRef;
  zeroPoints: ExternalRef;
}

export const BLOCK = 32;

/** Rows whose codes, zero points or scales are set rather than random (lm_head's stop and script rows). */
export interface FixedRow {
  row: number;
  /** the byte for every packed pair of codes in the row, or the row's K/2 packed bytes */
  codes: number | Uint8Array;
  /** the byte for every packed pair of zero points in the row */
  zeroPoints: number;
  /** the same scale for every block of the row (a constant row vector when codes and zero points are too), or one per block */
  scale?: number | Float32Array;
}

/**
 * Fills the part of `bytes` (which starts at tensor byte `start`) that lies in row `row` of `rowBytes` bytes:
 * `set(from, to, at)` with `from`..`to` in `bytes` and `at` the offset of `from` in the row.
 */
function fillRow(bytes: Uint8Array, start: number, rowBytes: number, row: number, set: (from: number, to: number, at: number) => void): void {
  const from = Math.max(row * rowBytes, start) - start;
  const to = Math.min((row + 1) * rowBytes, start + bytes.length) - start;
  if (from < to) set(from, to, from + start - row * rowBytes);
}

/** `value` over bytes[from, to), or the slice of a row's own values that falls there. */
function fillWith<T extends Uint8Array | Float32Array>(target: T, from: number, to: number, at: number, value: number | T): void {
  if (typeof value === 'number') target.fill(value, from, to);
  else target.set(value.subarray(at, at + to - from), from);
}

/**
 * Random weights of a K x N Linear: codes uniform in 0..15, zero points uniform in 0..15, scales positive in
 * [2^e, 2^(e+1)) with e chosen so the dequantised weights have an RMS near 1/sqrt(K): activations keep their scale
 * through the layer, as in a trained model.
 */
export function quantLinear(w: WeightFile, name: string, k: number, n: number, fixed: FixedRow[] = []): QuantLinear {
  if (k % (2 * BLOCK) !== 0) throw new Error(`${name}: K = ${k} must be a multiple of ${2 * BLOCK}`);
  const blocks = k / BLOCK;
  // (code - zero point) of two uniform 0..15 values has an RMS of sqrt(2 * 21.25) ~ 6.5; scales average 1.5 * 2^e.
  const exponent = Math.round(Math.log2(1 / (6.52 * Math.sqrt(k) * 1.5)));
  const weight = w.tensor('uint8', [n, blocks, BLOCK / 2], { kind: 'bytes' }, (bytes, start) => {
    for (const f of fixed) fillRow(bytes, start, k / 2, f.row, (a, b, at) => fillWith(bytes, a, b, at, f.codes));
  });
  const scales = w.tensor('float32', [n * blocks], { kind: 'float32', exponent, signed: false }, (bytes, start) => {
    const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    for (const f of fixed) {
      if (f.scale !== undefined) fillRow(bytes, start, blocks * 4, f.row, (a, b, at) => fillWith(values, a / 4, b / 4, at / 4, f.scale!));
    }
  });
  const zeroPoints = w.tensor('uint8', [n * (blocks / 2)], { kind: 'bytes' }, (bytes, start) => {
    for (const f of fixed) fillRow(bytes, start, blocks / 2, f.row, (a, b) => bytes.fill(f.zeroPoints, a, b));
  });
  return { name, k, n, weight, scales, zeroPoints };
}

/** The mean scale quantLinear gives a K-wide layer (for rows that must dequantise to a known constant). */
export function typicalScale(k: number): number {
  return 1.5 * 2 ** Math.round(Math.log2(1 / (6.52 * Math.sqrt(k) * 1.5)));
}

export function matMulNBits(g: GraphBuilder, x: string, l: QuantLinear): string {
  return g.op(
    'MatMulNBits',
    [
      x,
      g.external(`${l.name}.MatMul.weight_Q4`, l.weight),
      g.external(`${l.name}.MatMul.weight_scales`, l.scales),
      g.external(`${l.name}.MatMul.weight_zero_points`, l.zeroPoints),
    ],
    { K: l.k, N: l.n, bits: 4, block_size: BLOCK },
    'com.microsoft',
  );
}

/**
 * x / sqrt(mean(x^2) + eps) * weight over the last axis, in plain ops, in the form onnxruntime's optimizer fuses
 * into one SimplifiedLayerNormalization (Pow, ReduceMean, Add, Sqrt, Div, Mul), as it does for an optimised export.
 */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps = 1e-6): string {
  const meanSquare = g.op('ReduceMean', [g.op('Pow', [x, g.f32([2], [])])], { axes: [-1], keepdims: 1 });
  return g.op('Mul', [g.op('Div', [x, g.op('Sqrt', [g.op('Add', [meanSquare, g.f32([eps], [])])])]), weight]);
}

/** Exact (erf) GELU as torch exports it before opset 20. */
export function gelu(g: GraphBuilder, x: string): string {
  const erf = g.op('Erf', [g.op('Mul', [x, g.f32([Math.SQRT1_2], [])])]);
  return g.op('Mul', [g.op('Mul', [x, g.f32([0.5], [])]), g.op('Add', [erf, g.f32([1], [])])]);
}

/** Norm weights near 1 (in [0.5, 1)). */
export function normWeight(w: WeightFile, width: number): ExternalRef {
  return w.tensor('float32', [width], { kind: 'float32', exponent: -1, signed: false });
}
