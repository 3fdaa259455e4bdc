import { readFileSync } from 'node:fs';

export interface GraphInput {
  name: string;
  /** a number for a fixed dimension, a string for a named one */
  dims: (number | string | undefined)[];
}

/** Fields of a protobuf message: field number -> values (varints as numbers, length-delimited as byte views). */
function fields(buf: Uint8Array): Map<number, (number | Uint8Array)[]> {
  const out = new Map<number, (number | Uint8Array)[]>();
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
  while (pos < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    let value: number | Uint8Array;
    switch (key & 7) {
      case 0:
        value = varint();
        break;
      case 1:
        value = buf.subarray(pos, (pos += 8));
        break;
      case 2: {
        const length = varint();
        if (pos + length > buf.length) throw new Error('truncated protobuf');
        value = buf.subarray(pos, (pos += length));
        break;
      }
      case 5:
        value = buf.subarray(pos, (pos += 4));
        break;
      default:
        throw new Error(`unsupported protobuf wire type ${key & 7}`);
    }
    const list = out.get(field) ?? [];
    list.push(value);
    out.set(field, list);
  }
  return out;
}

const text = (v: number | Uint8Array | undefined) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : undefined);
const message = (v: number | Uint8Array | undefined) => (v instanceof Uint8Array ? fields(v) : new Map<number, (number | Uint8Array)[]>());

/**
 * The graph inputs of an .onnx file (ModelProto.graph = 7, GraphProto.input = 11, ValueInfoProto: name = 1,
 * type = 2 -> tensor_type = 1 -> shape = 2 -> dim = 1 -> dim_value = 1 | dim_param = 2). Read without
 * onnxruntime, which must stay out of the process that downloads (and out of the server's main thread).
 */
export function readGraphInputs(path: string): GraphInput[] {
  let graph: Map<number, (number | Uint8Array)[]>;
  try {
    graph = message(fields(readFileSync(path)).get(7)?.[0]);
  } catch (err) {
    throw new Error(`${path}: not an ONNX model (${(err as Error).message})`);
  }
  return (graph.get(11) ?? []).map((input) => {
    const info = message(input);
    const shape = message(message(message(info.get(2)?.[0]).get(1)?.[0]).get(2)?.[0]);
    const dims = (shape.get(1) ?? []).map((d) => {
      const dim = message(d);
      const value = dim.get(1)?.[0];
      return typeof value === 'number' ? value : text(dim.get(2)?.[0]);
    });
    return { name: text(info.get(1)?.[0]) ?? '', dims };
  });
}

/**
 * Whether a decoder takes `inputs_embeds` (so the embedding table lives outside the graph), and its width when
 * the graph declares it; null when it takes token ids.
 */
export function embeddingInput(path: string): { width: number | undefined } | null {
  const inputs = readGraphInputs(path);
  const embeds = inputs.find((i) => /embed/i.test(i.name));
  if (!embeds || inputs.some((i) => /input_ids|token/i.test(i.name))) return null;
  const width = embeds.dims[embeds.dims.length - 1];
  return { width: typeof width === 'number' ? width : undefined };
}
