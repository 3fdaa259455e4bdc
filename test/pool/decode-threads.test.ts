import { afterAll, describe, expect, it } from 'vitest';
import { DecodeThreads } from '../../src/pool/decode-threads.js';
import { encodeWav } from '../support/wav-writer.js';

const logger = { info: () => {}, warn: () => {}, error: () => {} };

describe('DecodeThreads', () => {
  const threads = new DecodeThreads({ threads: 1, logger });
  afterAll(() => threads.close());

  it('decodes uploads in the order they came, however many wait', async () => {
    // 0.5 s each at 16 kHz: ready as they are, so the order is the queue's
    const uploads = Array.from({ length: 8 }, (_, i) => encodeWav({ channels: [new Float32Array(8000).fill((i + 1) / 16)], sampleRate: 16000, format: 'pcm16' }));
    const order: number[] = [];
    const pcm = await Promise.all(uploads.map((bytes, i) => threads.decode(bytes).then((p) => (order.push(i), p))));
    // piscina's default queue ran them 0 1 3 5 7 4 2 6
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    pcm.forEach((p, i) => expect(p[100]).toBeCloseTo((i + 1) / 16, 3));
  });
});
