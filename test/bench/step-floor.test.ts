import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { floorFeeds, floorGraph } from '../../bench/floor.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { mulberry32 } from '../../tools/random.js';

const dir = mkdtempSync(join(tmpdir(), 'step-floor-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const K = 64;
const BLOCK = 32;

/** A "step" graph: two 4-bit MatMulNBits projections of x (N = 48 and 80), a plain MatMul, and glue between them. */
function writeStep(): string {
  const g = new GraphBuilder('step');
  const random = mulberry32(3);
  const x = g.input('x', 'float32', ['batch', 1, K]);
  const quantized = (n: number) => {
    const blocks = K / BLOCK;
    const weights = g.init({ type: 'uint8', dims: [n, blocks, BLOCK / 2], data: Uint8Array.from({ length: n * blocks * (BLOCK / 2) }, () => Math.floor(random() * 256)) }, 'w');
    const scales = g.f32(Float32Array.from({ length: n * blocks }, () => 0.01 + random() * 0.02), [n * blocks]);
    const zeros = g.init({ type: 'uint8', dims: [Math.ceil((n * blocks) / 2)], data: Uint8Array.from({ length: Math.ceil((n * blocks) / 2) }, () => 0x88) }, 'z');
    return g.op('MatMulNBits', [x, weights, scales, zeros], { K, N: n, bits: 4, block_size: BLOCK }, 'com.microsoft');
  };
  const a = quantized(48);
  const b = quantized(80);
  g.output('a', 'float32', ['batch', 1, 48], a);
  g.output('b', 'float32', ['batch', 1, 80], b);
  const plain = g.op('MatMul', [g.op('Relu', [a]), g.f32(Float32Array.from({ length: 48 * 8 }, random), [48, 8])]);
  g.output('c', 'float32', ['batch', 1, 8], plain);
  const { model, externalData } = g.build('step.onnx.data');
  writeFileSync(join(dir, 'step.onnx'), model);
  writeFileSync(join(dir, 'step.onnx.data'), externalData);
  return join(dir, 'step.onnx');
}

describe('the weights-only floor', () => {
  it('keeps the MatMulNBits nodes alone, each on its own input, computing what they compute in the step', async () => {
    const file = writeStep();
    const floor = floorGraph(readFileSync(file), file);
    expect(floor).toMatchObject({ matmuls: 2, quantized: true, inputs: [{ type: 'float32', k: K }, { type: 'float32', k: K }] });
    expect(floor.weightBytes).toBe((48 + 80) * 2 * 16 + (48 + 80) * 2 * 4 + (48 + 80));

    const step = await InferenceSession.create(file);
    const weights = await InferenceSession.create(floor.model, floor.sessionOptions);
    expect(weights.outputNames).toEqual(['floor_out_0', 'floor_out_1']);
    const batch = 3;
    const x = new Tensor('float32', Float32Array.from({ length: batch * K }, (_, i) => Math.sin(i)), [batch, 1, K]);
    const expected = await step.run({ x });
    const got = await weights.run({ floor_in_0: x, floor_in_1: x });
    expect(got.floor_out_0!.dims).toEqual([batch, 1, 48]);
    expect(Array.from(got.floor_out_0!.data as Float32Array)).toEqual(Array.from(expected.a!.data as Float32Array));
    expect(Array.from(got.floor_out_1!.data as Float32Array)).toEqual(Array.from(expected.b!.data as Float32Array));
    // The bench's own feeds fit the graph at any batch size.
    expect((await weights.run(floorFeeds(floor, 5))).floor_out_1!.dims).toEqual([5, 1, 80]);
    await Promise.all([step.release(), weights.release()]);
  });

  it('says why when a step graph has no weights to read', () => {
    const g = new GraphBuilder('empty');
    g.output('y', 'float32', ['batch', 4], g.op('Relu', [g.input('x', 'float32', ['batch', 4])]));
    const { model } = g.build('none.data');
    expect(() => floorGraph(model, 'empty.onnx')).toThrow('empty.onnx: no matmul with weights among its nodes, so no weights-only floor');
  });
});
