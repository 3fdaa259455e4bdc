/*
 * Protobuf at the wire level, just enough to edit ONNX graphs: a message is read as a list of fields that keep
 * their exact bytes, so a rewrite copies everything it does not understand (newer ONNX fields included) unchanged
 * and only adds or drops whole fields.
 */

export interface Field {
  /** field number */
  n: number;
  /** wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  wire: number;
  /** a varint's value (exact up to 2^53; negative int64 values are not expected where this is read) */
  int: number;
  /** a length-delimited field's payload, or a fixed field's bytes */
  bytes: Uint8Array;
  /** the whole field as it was on the wire, key included */
  raw: Uint8Array;
}

export function parseMessage(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let pos = 0;
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated protobuf');
      const byte = buf[pos++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
  };
  const take = (length: number) => {
    if (pos + length > buf.length) throw new Error('truncated protobuf');
    return buf.subarray(pos, (pos += length));
  };
  while (pos < buf.length) {
    const start = pos;
    const key = varint();
    const wire = key & 7;
    let int = 0;
    let bytes = buf.subarray(pos, pos);
    if (wire === 0) int = varint();
    else if (wire === 1) bytes = take(8);
    else if (wire === 2) bytes = take(varint());
    else if (wire === 5) bytes = take(4);
    else throw new Error(`unsupported protobuf wire type ${wire}`);
    out.push({ n: Math.floor(key / 8), wire, int, bytes, raw: buf.subarray(start, pos) });
  }
  return out;
}

export const text = (f: Field | undefined): string => (f ? Buffer.from(f.bytes).toString('utf8') : '');
export const first = (fields: readonly Field[], n: number): Field | undefined => fields.find((f) => f.n === n);
export const all = (fields: readonly Field[], n: number): Field[] => fields.filter((f) => f.n === n);
export const sub = (f: Field | undefined): Field[] => (f && f.wire === 2 ? parseMessage(f.bytes) : []);

/** Values of a repeated integer field, packed or not. */
export function ints(fields: readonly Field[], n: number): number[] {
  return all(fields, n).flatMap((f) => (f.wire === 2 ? parseMessage(packedAsFields(f.bytes)).map((p) => p.int) : [f.int]));
}

/**
 * Values of a repeated int64 field, packed or not, exact for either sign: a negative int64 is written as a ten-byte
 * two's complement varint, past what a double holds exactly (Field.int).
 */
export function signedInts(fields: readonly Field[], n: number): number[] {
  const keyLength = varintBytes(n * 8).length;
  return all(fields, n).flatMap((f) => int64Varints(f.wire === 2 ? f.bytes : f.raw.subarray(keyLength)));
}

function int64Varints(bytes: Uint8Array): number[] {
  const out: number[] = [];
  let value = 0n;
  let shift = 0n;
  for (const byte of bytes) {
    value |= BigInt(byte & 0x7f) << shift;
    shift += 7n;
    if (byte < 0x80) {
      out.push(Number(BigInt.asIntN(64, value)));
      value = 0n;
      shift = 0n;
    }
  }
  return out;
}

/** A packed varint run re-keyed as field 1 entries so parseMessage can read it. */
function packedAsFields(bytes: Uint8Array): Uint8Array {
  const parts: number[] = [];
  let fresh = true;
  for (const byte of bytes) {
    if (fresh) parts.push(0x08);
    parts.push(byte);
    fresh = byte < 0x80;
  }
  return Uint8Array.from(parts);
}

function varintBytes(value: number | bigint): number[] {
  // Negative values are 64-bit two's complement, ten bytes on the wire.
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
  return out;
}

export function intField(n: number, value: number | bigint): Uint8Array {
  return Uint8Array.from([...varintBytes(n * 8), ...varintBytes(value)]);
}

export function bytesField(n: number, payload: Uint8Array | string): Uint8Array {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return concat([Uint8Array.from([...varintBytes(n * 8 + 2), ...varintBytes(body.length)]), body]);
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}
