import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { symmetric } from '../../tools/random.js';

/** Random feeds for a session's inputs: batch rows, seq new positions after past cached ones. */
export function feedsFor(session: InferenceSession, batch: number, seq: number, past: number, seed: number): Record<string, Tensor> {
  const random = symmetric(seed);
  const feeds: Record<string, Tensor> = {};
  for (const m of session.inputMetadata) {
    if (!m.isTensor) throw new Error(`${m.name} is not a tensor`);
    const dims = m.shape.map((d) => {
      if (typeof d === 'number') return d;
      if (/batch/.test(d)) return batch;
      if (/past/.test(d)) return past;
      if (/total/.test(d)) return past + seq;
      if (/audio/.test(d)) return 3;
      return seq;
    });
    const size = dims.reduce((a, b) => a * b, 1);
    if (m.type === 'int64') {
      const values = /mask/.test(m.name)
        ? Array.from({ length: size }, () => 1n)
        : /pos/.test(m.name)
          ? Array.from({ length: size }, (_, i) => BigInt(past + (i % seq)))
          : Array.from({ length: size }, () => BigInt(Math.floor(((random() + 1) / 2) * 151000)));
      feeds[m.name] = new Tensor('int64', BigInt64Array.from(values), dims);
    } else if (m.type === 'float16') {
      const half = new Uint16Array(size);
      // Small normal fp16 values: sign, exponent 13..14, random mantissa.
      for (let i = 0; i < size; i++) half[i] = (random() < 0 ? 0x8000 : 0) | ((13 + (i % 2)) << 10) | Math.floor(((random() + 1) / 2) * 1023);
      feeds[m.name] = new Tensor('float16', half, dims);
    } else {
      feeds[m.name] = new Tensor('float32', Float32Array.from({ length: size }, random), dims);
    }
  }
  return feeds;
}

export { asFloat32, relativeRms } from '../../src/asr/half.js';
