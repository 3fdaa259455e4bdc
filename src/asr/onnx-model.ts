import type { SessionInfo, TensorInfo } from './contract.js';
import { all, bytesField, concat, first, intField, ints, parseMessage, signedInts, sub, text, type Field } from './onnx-proto.js';

/*
 * ONNX messages (onnx.proto field numbers) read and written over onnx-proto.ts: a model's graph as fields that
 * keep their bytes, plus the few messages a graph rewrite adds.
 */

/** TensorProto.DataType numbers, spelled as onnxruntime-node spells element types. */
const ELEMENT_TYPES: Record<number, string> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  16: 'bfloat16',
};
const ELEMENT_TYPE_NUMBER: Record<string, number> = Object.fromEntries(
  Object.entries(ELEMENT_TYPES).map(([n, name]) => [name, Number(n)]),
);

export const elementType = (n: number): string => ELEMENT_TYPES[n] ?? `type ${n}`;

// ModelProto
const MODEL_GRAPH = 7;
const MODEL_OPSET_IMPORT = 8;
// GraphProto
export const GRAPH_NODE = 1;
export const GRAPH_INITIALIZER = 5;
export const GRAPH_INPUT = 11;
export const GRAPH_OUTPUT = 12;
export const GRAPH_VALUE_INFO = 13;

export interface OnnxModel {
  /** top-level ModelProto fields, the graph among them */
  fields: Field[];
  /** GraphProto fields */
  graph: Field[];
}

export function readModel(bytes: Uint8Array): OnnxModel {
  const fields = parseMessage(bytes);
  const graphs = all(fields, MODEL_GRAPH);
  if (graphs.length !== 1) throw new Error(`expected one graph in the model; found ${graphs.length}`);
  return { fields, graph: sub(graphs[0]) };
}

/**
 * A model of its own around these GraphProto fields (ir_version 8, the default domain at `opset`): the small graphs a
 * backend builds at load time rather than rewriting one of the model's.
 */
export function standaloneModel(name: string, graph: readonly Uint8Array[], opset: number): Uint8Array {
  const opsetImport = concat([bytesField(1, ''), intField(2, opset)]);
  return concat([intField(1, 8), bytesField(MODEL_GRAPH, concat([...graph, bytesField(2, name)])), bytesField(MODEL_OPSET_IMPORT, opsetImport)]);
}

/** The model with its graph replaced by these graph fields (everything else byte for byte). */
export function writeModel(model: OnnxModel, graph: readonly Uint8Array[]): Uint8Array {
  const graphField = bytesField(MODEL_GRAPH, concat(graph));
  return concat(model.fields.map((f) => (f.n === MODEL_GRAPH ? graphField : f.raw)));
}

/** Opset version per domain ('' is the default ONNX domain). */
export function opsets(model: OnnxModel): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of all(model.fields, MODEL_OPSET_IMPORT)) {
    const entry = sub(f);
    const domain = text(first(entry, 1));
    out.set(domain === 'ai.onnx' ? '' : domain, first(entry, 2)?.int ?? 0);
  }
  return out;
}

/** ValueInfoProto: name = 1, type = 2 -> tensor_type = 1 -> (elem_type = 1, shape = 2 -> dim = 1 -> dim_value = 1 | dim_param = 2). */
export function tensorInfo(f: Field): TensorInfo {
  const info = sub(f);
  const tensorType = sub(first(sub(first(info, 2)), 1));
  const elem = first(tensorType, 1);
  const dims = all(sub(first(tensorType, 2)), 1).map((d) => {
    const dim = sub(d);
    const size = first(dim, 1);
    return size ? size.int : text(first(dim, 2));
  });
  return { name: text(first(info, 1)), type: elem ? elementType(elem.int) : 'unknown', shape: dims };
}

/** A graph's own inputs and outputs, as a session would list them (for the contract readers). */
export function graphInterface(model: OnnxModel, file: string): SessionInfo {
  return { file, inputs: model.graph.filter((f) => f.n === GRAPH_INPUT).map(tensorInfo), outputs: model.graph.filter((f) => f.n === GRAPH_OUTPUT).map(tensorInfo) };
}

export function valueInfo(name: string, type: string, shape: readonly (number | string)[]): Uint8Array {
  const dims = shape.map((d) => bytesField(1, typeof d === 'number' ? intField(1, d) : bytesField(2, d)));
  const tensorType = concat([intField(1, ELEMENT_TYPE_NUMBER[type]!), bytesField(2, concat(dims))]);
  return concat([bytesField(1, name), bytesField(2, bytesField(1, tensorType))]);
}

export interface OnnxNode {
  opType: string;
  domain: string;
  name: string;
  inputs: string[];
  outputs: string[];
  /** integer attributes */
  intAttributes: Map<string, number>;
  /** integer-list attributes (Transpose's perm, a Constant's value_ints) */
  intListAttributes: Map<string, number[]>;
  /** tensor attributes (a Constant's value), as TensorProto fields */
  tensorAttributes: Map<string, Field[]>;
  /** a control-flow node (If, Loop, Scan): its bodies may read tensors its inputs do not list */
  hasSubgraphs: boolean;
  /** attributes of every kind */
  attributeCount: number;
}

/** AttributeProto.type values a rewrite reads */
const ATTRIBUTE = { INT: 2, TENSOR: 4, GRAPH: 5, INTS: 7, GRAPHS: 10 } as const;

/**
 * NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5, domain = 7. AttributeProto: name = 1,
 * i = 3, t = 5, g = 6, ints = 8, graphs = 11, type = 20 (read by type; by the field present when a writer left it out).
 */
export function readNode(f: Field): OnnxNode {
  const node = sub(f);
  const intAttributes = new Map<string, number>();
  const intListAttributes = new Map<string, number[]>();
  const tensorAttributes = new Map<string, Field[]>();
  let hasSubgraphs = false;
  for (const a of all(node, 5)) {
    const attr = sub(a);
    const name = text(first(attr, 1));
    const present = [3, 5, 6, 8, 11].find((n) => first(attr, n));
    const type = first(attr, 20)?.int ?? { 3: ATTRIBUTE.INT, 5: ATTRIBUTE.TENSOR, 6: ATTRIBUTE.GRAPH, 8: ATTRIBUTE.INTS, 11: ATTRIBUTE.GRAPHS }[present ?? 0];
    if (type === ATTRIBUTE.INT) intAttributes.set(name, signedInts(attr, 3)[0] ?? 0);
    else if (type === ATTRIBUTE.TENSOR) tensorAttributes.set(name, sub(first(attr, 5)));
    else if (type === ATTRIBUTE.INTS) intListAttributes.set(name, signedInts(attr, 8));
    else if (type === ATTRIBUTE.GRAPH || type === ATTRIBUTE.GRAPHS) hasSubgraphs = true;
  }
  return {
    opType: text(first(node, 4)),
    domain: text(first(node, 7)),
    name: text(first(node, 3)),
    inputs: all(node, 1).map(text),
    outputs: all(node, 2).map(text),
    intAttributes,
    intListAttributes,
    tensorAttributes,
    hasSubgraphs,
    attributeCount: all(node, 5).length,
  };
}

/** A node with integer attributes (AttributeProto type INT = 2) or integer-list ones (INTS = 7). */
export function node(
  opType: string,
  name: string,
  inputs: readonly string[],
  outputs: readonly string[],
  attributes: Record<string, number | readonly number[]> | Map<string, number> = {},
  domain = '',
): Uint8Array {
  const entries = attributes instanceof Map ? [...attributes] : Object.entries(attributes);
  const attrs = entries.map(([key, value]) =>
    bytesField(
      5,
      typeof value === 'number'
        ? concat([bytesField(1, key), intField(3, value), intField(20, 2)])
        : concat([bytesField(1, key), ...value.map((v) => intField(8, v)), intField(20, 7)]),
    ),
  );
  return concat([
    ...inputs.map((i) => bytesField(1, i)),
    ...outputs.map((o) => bytesField(2, o)),
    bytesField(3, name),
    bytesField(4, opType),
    ...attrs,
    ...(domain ? [bytesField(7, domain)] : []),
  ]);
}

/** An int64 initializer held in the graph (TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9). */
export function int64Initializer(name: string, values: readonly number[], dims: readonly number[]): Uint8Array {
  const data = Buffer.from(BigInt64Array.from(values, (v) => BigInt(v)).buffer);
  return concat([...dims.map((d) => intField(1, d)), intField(2, ELEMENT_TYPE_NUMBER.int64!), bytesField(8, name), bytesField(9, data)]);
}

/**
 * The values of an int64 TensorProto (data_type 7; raw_data = 9, or int64_data = 7 packed or not), exact for any
 * sign; undefined for another type or external data.
 */
export function int64Values(tensor: readonly Field[]): number[] | undefined {
  if (first(tensor, 2)?.int !== ELEMENT_TYPE_NUMBER.int64 || first(tensor, 14)?.int === 1) return undefined;
  const raw = first(tensor, 9);
  if (raw) {
    if (raw.bytes.length % 8 !== 0) return undefined;
    const copy = Uint8Array.from(raw.bytes);
    return Array.from(new BigInt64Array(copy.buffer), Number);
  }
  return signedInts(tensor, 7);
}

export interface InitializerInfo {
  name: string;
  type: string;
  dims: number[];
  /** external data file, relative to the model's directory, when the bytes live outside the graph */
  location?: string;
}

/** TensorProto: dims = 1, data_type = 2, name = 8, external_data = 13 (key = 1, value = 2), data_location = 14. */
export function initializerInfo(f: Field): InitializerInfo {
  const t = sub(f);
  const entries = all(t, 13).map(sub);
  const location = entries.find((e) => text(first(e, 1)) === 'location');
  return {
    name: text(first(t, 8)),
    type: elementType(first(t, 2)?.int ?? 0),
    dims: ints(t, 1),
    ...(first(t, 14)?.int === 1 && location ? { location: text(first(location, 2)) } : {}),
  };
}
