/**
 * ITU-T G.711 decoding: one 8-bit code per sample to 16-bit linear PCM (as float in [-1, 1)), by the
 * Recommendation's tables (the expansion of Sun's reference g711.c). Each code is decoded on its own, so
 * streams split at any byte need no state.
 */

/** μ-law: codes are stored inverted; 8 segments, each doubling the step, with the bias of 0x84 removed. */
function mulawToLinear(code: number): number {
  const u = ~code & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** A-law: even bits inverted (XOR 0x55); segment 0 is linear, segment s > 0 doubles the step s - 1 times. */
function alawToLinear(code: number): number {
  const a = code ^ 0x55;
  let t = (a & 0x0f) << 4;
  const segment = (a & 0x70) >> 4;
  if (segment === 0) t += 8;
  else t = (t + 0x108) << (segment - 1);
  return a & 0x80 ? t : -t;
}

function table(expand: (code: number) => number): Int16Array {
  return Int16Array.from({ length: 256 }, (_, code) => expand(code));
}

/** The 16-bit linear value of every code. */
export const MULAW_TABLE = table(mulawToLinear);
export const ALAW_TABLE = table(alawToLinear);

function decode(codes: Uint8Array, lut: Int16Array): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = lut[codes[i]!]! / 32768;
  return out;
}

export function decodeMulaw(codes: Uint8Array): Float32Array {
  return decode(codes, MULAW_TABLE);
}

export function decodeAlaw(codes: Uint8Array): Float32Array {
  return decode(codes, ALAW_TABLE);
}
