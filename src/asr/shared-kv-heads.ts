import { GraphEditor, unreadDropped, type GraphNode } from './graph-edit.js';
import { GRAPH_INITIALIZER, GRAPH_NODE, GRAPH_OUTPUT, initializerInfo, int64Values, node, readModel, tensorInfo, writeModel } from './onnx-model.js';
import { bytesField, sub } from './onnx-proto.js';

/*
 * Grouped-query attention in plain operators repeats every KV head for the query heads that share it
 * (transformers' repeat_kv: Unsqueeze at axis 2, Expand by the group size, Reshape to the query's head count)
 * before the two attention matmuls. On the CPU that is a copy of the whole cache, twice per layer and step, growing
 * with rows x context (two profiles of the full-size stand-in's 8-row step at 200 tokens: Expand took 30 of 229
 * and 15 of 160 ms of kernel time). The same products
 * come out when each group of query heads is laid next to its one KV head instead:
 *
 *   A [B, H, S, X] -> Reshape [B, kvH, g*S, X];  MatMul with the KV head [B, kvH, X, Y] (transposed if it was);
 *   [B, kvH, g*S, Y] -> Reshape [B, H, S, Y]
 *
 * since query head h = k*g + r reads KV head k, and rows r*S..r*S+S-1 of group k are exactly head h's rows.
 * Reshapes move no data. The reshapes' S and X are read from A at run time, so an A without H heads fails the
 * reshape instead of mixing rows.
 *
 * Only the repeat with constant shapes is matched (initializers, or Constant nodes with `value` or `value_ints`:
 * the group size and head count are read, not guessed), as the stand-in writes it. An export that computes those shapes at run time from
 * Shape/Gather/Concat, as torch's exporters do for dynamic axes, is left as exported and the engine logs it once;
 * whether Reza2kn/mega-asr-onnx is such an export is unknown until the real files are loaded.
 */

interface Repeat {
  /** the KV tensor before it was repeated, [B, kvH, L, D] */
  kv: string;
  /** read as [B, kvH, D, L] (the repeated tensor was transposed before the matmul) */
  transposed: boolean;
  heads: number;
  kvHeads: number;
  /** query heads per KV head */
  group: number;
}

interface GraphIndex {
  producer: Map<string, GraphNode>;
  /** int64 constants by tensor name: initializers and Constant nodes */
  constants: Map<string, number[]>;
}

/**
 * The graph with each attention matmul that reads repeated KV heads rewritten to read each KV head once, and how
 * many were; with none, the graph unchanged and why.
 */
export function withSharedKvHeads(bytes: Uint8Array): { bytes: Uint8Array; count: number; reason?: string } {
  const model = readModel(bytes);
  const edit = GraphEditor.open(model, 'shared_kv');
  if (typeof edit === 'string') return { bytes, count: 0, reason: edit };
  const { nodes } = edit;
  const g: GraphIndex = { producer: edit.producer, constants: new Map() };
  for (const f of model.graph) {
    if (f.n !== GRAPH_INITIALIZER) continue;
    const values = int64Values(sub(f));
    if (values) g.constants.set(initializerInfo(f).name, values);
  }
  for (const { node: n } of nodes) {
    if (n.opType !== 'Constant' || n.domain) continue;
    // `value` as an int64 tensor, or `value_ints` (as onnxscript writes 1-D integer constants)
    const value = n.tensorAttributes.get('value');
    const values = value ? int64Values(value) : n.intListAttributes.get('value_ints');
    if (values) g.constants.set(n.outputs[0]!, values);
  }

  /** each rewritten matmul's field -> the nodes that take its place (in place: the graph stays in topological order) */
  const replaced = new Map<Uint8Array, Uint8Array[]>();
  for (const { field, node: matmul } of nodes) {
    if (matmul.opType !== 'MatMul' || matmul.domain || matmul.inputs.length !== 2) continue;
    const repeat = repeatedKv(matmul.inputs[1]!, g);
    if (!repeat) continue;
    const [a] = matmul.inputs as [string];
    const replacement: Uint8Array[] = [];
    const op = (opType: string, hint: string, inputs: string[], attributes: Record<string, number | readonly number[]> = {}, outputs?: readonly string[]) => {
      const out = outputs ?? [edit.fresh(hint)];
      replacement.push(bytesField(GRAPH_NODE, node(opType, out[0]!, inputs, out, attributes)));
      return out[0]!;
    };
    // A [B, H, S, X] -> [B, kvH, g*S, X], with S and X read from A itself, so that the reshape fails (rather than
    // mixing rows) unless A really has H = kvH * g heads.
    const queryShape = op('Shape', 'query_shape', [a]);
    const rows = op('Slice', 'query_rows', [queryShape, edit.int64([2]), edit.int64([3])]);
    const width = op('Slice', 'query_width', [queryShape, edit.int64([3]), edit.int64([4])]);
    const groupedShape = op('Concat', 'grouped_shape', [edit.int64([0, repeat.kvHeads]), op('Mul', 'group_rows', [rows, edit.int64([repeat.group])]), width], { axis: 0 });
    const grouped = op('Reshape', 'grouped', [a, groupedShape]);
    const kv = repeat.transposed ? op('Transpose', 'transposed', [repeat.kv], { perm: [0, 1, 3, 2] }) : repeat.kv;
    const product = op('MatMul', 'product', [grouped, kv]);
    const productWidth = op('Slice', 'product_width', [op('Shape', 'product_shape', [product]), edit.int64([3]), edit.int64([4])]);
    const headsShape = op('Concat', 'heads_shape', [edit.int64([0, repeat.heads]), rows, productWidth], { axis: 0 });
    op('Reshape', 'heads', [product, headsShape], {}, matmul.outputs);
    replaced.set(field.raw, replacement);
  }
  const count = replaced.size;
  if (count === 0) return { bytes, count, reason: 'no attention matmul reads KV heads repeated with constant shapes' };

  // Every node nothing kept reads is dropped (the repeat chains, unless a graph output or another reader keeps
  // them), and every initializer only dropped nodes read (their shape constants).
  const outputs = new Set(model.graph.filter((f) => f.n === GRAPH_OUTPUT).map((f) => tensorInfo(f).name));
  const graph = model.graph.flatMap((f) => replaced.get(f.raw) ?? [f.raw]);
  return { bytes: writeModel(model, unreadDropped([...graph, ...edit.initializers], outputs)), count };
}

/** How `operand` repeats a KV tensor's heads, when it is transformers' repeat_kv (then maybe transposed) with constant shapes. */
function repeatedKv(operand: string, g: GraphIndex): Repeat | undefined {
  const made = (tensor: string, opType: string) => {
    const p = g.producer.get(tensor);
    return !p || p.node.opType !== opType || p.node.domain ? undefined : p.node;
  };
  let tensor = operand;
  const transpose = made(tensor, 'Transpose');
  const perm = transpose?.intListAttributes.get('perm');
  if (transpose) {
    if (perm?.join(',') !== '0,1,3,2') return undefined;
    tensor = transpose.inputs[0]!;
  }
  const reshape = made(tensor, 'Reshape');
  if (!reshape || (reshape.intAttributes.get('allowzero') ?? 0) !== 0) return undefined;
  const expand = made(reshape.inputs[0]!, 'Expand');
  if (!expand) return undefined;
  const unsqueeze = made(expand.inputs[0]!, 'Unsqueeze');
  if (!unsqueeze) return undefined;
  const to = g.constants.get(reshape.inputs[1]!);
  const by = g.constants.get(expand.inputs[1]!);
  const axes = g.constants.get(unsqueeze.inputs[1] ?? '');
  // [B, kvH, L, D] -> [B, kvH, 1, L, D] -> [B, kvH, g, L, D] -> [B, kvH * g, L, D], B copied by the 0
  if (axes?.length !== 1 || (axes[0] !== 2 && axes[0] !== -3)) return undefined;
  if (by?.length !== 5 || by[2]! < 2 || [0, 1, 3, 4].some((i) => by[i] !== 1)) return undefined;
  const group = by[2]!;
  if (to?.length !== 4 || to[0] !== 0 || to[2] !== -1 || !(to[3]! > 0) || !(to[1]! > 0) || to[1]! % group !== 0) return undefined;
  return { kv: unsqueeze.inputs[0]!, transposed: !!transpose, heads: to[1]!, kvHeads: to[1]! / group, group };
}
