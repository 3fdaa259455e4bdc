import { describe, expect, it } from 'vitest';
import { ALAW_TABLE, decodeAlaw, decodeMulaw, MULAW_TABLE } from '../../src/audio/g711.js';

// Code points from ITU-T G.711 (Tables 1a/2a: A-law, 1b/2b: mu-law), with the decoder outputs scaled to 16 bits
// as in the Recommendation's software tools (G.191 g711.c): mu-law 14-bit values x4, A-law 13-bit values x8.
describe('G.711 decoding', () => {
  it('decodes mu-law code points per the Recommendation', () => {
    expect(MULAW_TABLE[0xff]).toBe(0);
    expect(MULAW_TABLE[0x7f]).toBe(0); // negative zero
    expect(MULAW_TABLE[0xfe]).toBe(8);
    expect(MULAW_TABLE[0x7e]).toBe(-8);
    expect(MULAW_TABLE[0xef]).toBe(132); // first step of segment 1
    expect(MULAW_TABLE[0x80]).toBe(32124); // largest magnitude
    expect(MULAW_TABLE[0x00]).toBe(-32124);
  });

  it('decodes A-law code points per the Recommendation', () => {
    expect(ALAW_TABLE[0xd5]).toBe(8); // smallest positive (0x80 after the even-bit inversion)
    expect(ALAW_TABLE[0x55]).toBe(-8);
    expect(ALAW_TABLE[0xd4]).toBe(24);
    expect(ALAW_TABLE[0xc5]).toBe(264); // first step of segment 1
    expect(ALAW_TABLE[0xaa]).toBe(32256); // largest magnitude
    expect(ALAW_TABLE[0x2a]).toBe(-32256);
  });

  it('is odd-symmetric in the sign bit and monotonic in magnitude within each sign', () => {
    for (const [lut, positive] of [
      [MULAW_TABLE, (c: number) => 0xff - c], // magnitude order of positive mu-law codes: 0xff (0) .. 0x80
      [ALAW_TABLE, (c: number) => (c ^ 0x55) & 0x7f], // A-law magnitude rank after undoing the inversion
    ] as const) {
      for (let c = 0; c < 128; c++) expect(lut[c | 0x80]).toBe(-lut[c]! || 0);
      const byRank = Array.from({ length: 128 }, (_, c) => c | 0x80).sort((a, b) => positive(a) - positive(b));
      for (let i = 1; i < byRank.length; i++) expect(lut[byRank[i]!]!).toBeGreaterThan(lut[byRank[i - 1]!]!);
    }
  });

  it('decodes streams to floats in [-1, 1)', () => {
    const codes = Uint8Array.from([0xff, 0x80, 0x00, 0xfe]);
    expect([...decodeMulaw(codes)]).toEqual([0, 32124 / 32768, -32124 / 32768, 8 / 32768]);
    expect([...decodeAlaw(Uint8Array.from([0xd5, 0xaa]))]).toEqual([8 / 32768, 32256 / 32768]);
  });
});
