import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** Element types the fixture graphs use, named as onnxruntime-node names them. */
export type ElemType = 'float32' | 'float16' | 'int64' | 'bool' | 'uint8';

const ELEM: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
  uint8: onnx.TensorProto.DataType.UINT8,
};

export type Dim = number | string;
/** A plain number is an INT attribute; floats are wrapped so the type is explicit. */
type AttrValue = number | number[] | string | { f: number } | { floats: number[] } | { tensor: TensorValue };

export interface TensorValue {
  type: ElemType;
  dims: number[];
  data: Float32Array | BigInt64Array | Uint16Array | Uint8Array;
}

/** Where an initializer's bytes already lie in an external data file (written by the caller). */
export interface ExternalRef {
  type: ElemType;
  dims: number[];
  location: string;
  offset: number;
  length: number;
}

/** Initializers up to this size stay inside the .onnx file, larger ones go to external data like real exports. */
const INLINE_LIMIT_BYTES = 1024;

function bytesOf(t: TensorValue): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function valueInfo(name: string, type: ElemType, shape: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/**
 * A small imperative ONNX graph builder: each op call returns the name of its output, so a graph reads
 * like the computation it performs. Only what the fixture models need.
 */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: { name: string; value: TensorValue }[] = [];
  private readonly externals: { name: string; ref: ExternalRef }[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private counter = 0;

  constructor(private readonly graphName: string) {}

  input(name: string, type: ElemType, shape: Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  /**
   * Declares a graph output produced by `from`. build() gives the producing node's result the output's name, as a
   * torch export does; an Identity stays only where it cannot (`from` is an input, an initializer, or already
   * named for another output): onnxruntime runs an Identity before a graph output as a full copy.
   */
  output(name: string, type: ElemType, shape: Dim[], from: string): void {
    this.nodes.push({ opType: 'Identity', input: [from], output: [name], name: `out_${name}` });
    this.outputs.push(valueInfo(name, type, shape));
  }

  init(value: TensorValue, hint = 'c'): string {
    const name = `${hint}_${this.counter++}`;
    this.initializers.push({ name, value });
    return name;
  }

  /** An initializer whose bytes the caller has written to an external data file (shared between graphs). */
  external(name: string, ref: ExternalRef): string {
    this.externals.push({ name, ref });
    return name;
  }

  /** Points the external initializers stored in file `from` at file `to` (a link to the same bytes). */
  moveExternals(from: string, to: string): void {
    for (const e of this.externals) if (e.ref.location === from) e.ref = { ...e.ref, location: to };
  }

  f32(values: number[] | Float32Array, dims: number[] = [values.length]): string {
    return this.init({ type: 'float32', dims, data: Float32Array.from(values) }, 'f');
  }

  i64(values: number[], dims: number[] = [values.length]): string {
    return this.init({ type: 'int64', dims, data: BigInt64Array.from(values.map((v) => BigInt(v))) }, 'i');
  }

  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain?: string): string {
    const out = `${opType.toLowerCase()}_${this.counter++}`;
    const attribute = Object.entries(attrs).map(([name, v]) => {
      if (typeof v === 'number') return { name, type: onnx.AttributeProto.AttributeType.INT, i: v };
      if (typeof v === 'string') return { name, type: onnx.AttributeProto.AttributeType.STRING, s: Buffer.from(v) };
      if (Array.isArray(v)) return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: v };
      if ('f' in v) return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v.f };
      if ('floats' in v) return { name, type: onnx.AttributeProto.AttributeType.FLOATS, floats: v.floats };
      return { name, type: onnx.AttributeProto.AttributeType.TENSOR, t: this.tensorProto(name, v.tensor, null) };
    });
    this.nodes.push({ opType, input: inputs, output: [out], name: out, attribute, ...(domain ? { domain } : {}) });
    return out;
  }

  private tensorProto(
    name: string,
    value: TensorValue,
    external: { location: string; offset: number } | null,
  ): onnxProto.onnx.ITensorProto {
    const base = { name, dataType: ELEM[value.type], dims: value.dims };
    if (external) {
      return {
        ...base,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: external.location },
          { key: 'offset', value: String(external.offset) },
          { key: 'length', value: String(value.data.byteLength) },
        ],
      };
    }
    return { ...base, rawData: bytesOf(value) };
  }

  /**
   * Serialises the model; large initializers are laid out (64-byte aligned) in `externalDataFile`,
   * which must be written next to the .onnx file under exactly that name.
   */
  build(externalDataFile: string, opset = 17): { model: Uint8Array; externalData: Uint8Array } {
    const chunks: Uint8Array[] = [];
    let offset = 0;
    const initializer = this.initializers.map(({ name, value }) => {
      if (value.data.byteLength <= INLINE_LIMIT_BYTES) return this.tensorProto(name, value, null);
      const padding = (64 - (offset % 64)) % 64;
      if (padding) chunks.push(new Uint8Array(padding));
      offset += padding;
      const proto = this.tensorProto(name, value, { location: externalDataFile, offset });
      chunks.push(bytesOf(value));
      offset += value.data.byteLength;
      return proto;
    });
    for (const { name, ref } of this.externals) {
      initializer.push({
        name,
        dataType: ELEM[ref.type],
        dims: ref.dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: ref.location },
          { key: 'offset', value: String(ref.offset) },
          { key: 'length', value: String(ref.length) },
        ],
      });
    }
    const node = this.namedOutputs();
    // Contrib operators (MatMulNBits) need their domain imported.
    const domains = [...new Set(this.nodes.map((n) => n.domain).filter((d): d is string => !!d))];
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      producerName: 'mega-asr-server fixture generator',
      opsetImport: [{ domain: '', version: opset }, ...domains.map((domain) => ({ domain, version: 1 }))],
      graph: { name: this.graphName, node, initializer, input: this.inputs, output: this.outputs },
    }).finish();
    return { model, externalData: Buffer.concat(chunks) };
  }

  /** The nodes with each output() Identity folded into the node producing its input, where it can be. */
  private namedOutputs(): onnxProto.onnx.INodeProto[] {
    const producers = new Set(this.nodes.flatMap((n) => n.output ?? []));
    // an output declared from another output keeps its Identity: the other's producer is renamed already
    const outputNames = new Set(this.outputs.map((o) => o.name));
    const renamed = new Map<string, string>();
    const folded = new Set<onnxProto.onnx.INodeProto>();
    for (const n of this.nodes) {
      const from = n.input?.[0];
      if (n.opType !== 'Identity' || n.name !== `out_${n.output?.[0]}` || !from || !producers.has(from) || renamed.has(from) || outputNames.has(from)) continue;
      renamed.set(from, n.output![0]!);
      folded.add(n);
    }
    const rename = (names: string[] | null | undefined) => (names ?? []).map((t) => renamed.get(t) ?? t);
    return this.nodes.filter((n) => !folded.has(n)).map((n) => ({ ...n, input: rename(n.input), output: rename(n.output) }));
  }
}
