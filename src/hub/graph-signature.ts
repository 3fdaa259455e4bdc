import { readFile } from 'node:fs/promises';
import { readDecoderContract, type SessionInfo, type TensorInfo } from '../asr/contract.js';

type Fields = Map<number, (number | Uint8Array)[]>;

/** Fields of a protobuf message: field number -> values (varints as numbers, length-delimited as byte views). */
function fields(buf: Uint8Array): Fields {
  const out: Fields = new Map();
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

const text = (v: number | Uint8Array | undefined) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : '');
const message = (v: number | Uint8Array | undefined): Fields => (v instanceof Uint8Array ? fields(v) : new Map());

/** TensorProto.DataType numbers, spelled as onnxruntime-node spells element types. */
const ELEMENT_TYPES: Record<number, string> = { 1: 'float32', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

/** ValueInfoProto: name = 1, type = 2 -> tensor_type = 1 -> (elem_type = 1, shape = 2 -> dim = 1 -> dim_value = 1 | dim_param = 2). */
function tensorInfo(value: number | Uint8Array): TensorInfo {
  const info = message(value);
  const tensorType = message(message(info.get(2)?.[0]).get(1)?.[0]);
  const elemType = tensorType.get(1)?.[0];
  const dims = (message(tensorType.get(2)?.[0]).get(1) ?? []).map((d) => {
    const dim = message(d);
    const size = dim.get(1)?.[0];
    return typeof size === 'number' ? size : text(dim.get(2)?.[0]);
  });
  return { name: text(info.get(1)?.[0]), type: typeof elemType === 'number' ? (ELEMENT_TYPES[elemType] ?? `type ${elemType}`) : 'unknown', shape: dims };
}

/**
 * A graph's inputs and outputs as onnxruntime would report them (ModelProto.graph = 7; GraphProto.input = 11,
 * output = 12), read without onnxruntime, which stays out of the process that downloads.
 */
async function readGraphSignature(path: string): Promise<SessionInfo> {
  let graph: Fields;
  try {
    graph = message(fields(await readFile(path)).get(7)?.[0]);
  } catch (err) {
    throw new Error(`${path}: not an ONNX model (${(err as Error).message})`);
  }
  return { file: path, inputs: (graph.get(11) ?? []).map(tensorInfo), outputs: (graph.get(12) ?? []).map(tensorInfo) };
}

/**
 * Whether the decoders take `inputs_embeds` (so the embedding table lives outside the graph) and its width when
 * declared; null when they take token ids. Decided by the engine's own contract reader, so the download and the
 * engine never disagree (a graph the engine would refuse is refused here, with the engine's message).
 */
export async function decoderEmbeddingInput(prefillPath: string): Promise<{ width: number | undefined } | null> {
  const contract = readDecoderContract(await readGraphSignature(prefillPath), 'prefill');
  return contract.token.kind === 'inputs_embeds' ? { width: contract.hiddenSize } : null;
}
