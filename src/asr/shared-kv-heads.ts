import {
  GRAPH_INITIALIZER,
  GRAPH_INPUT,
  GRAPH_NODE,
  GRAPH_OUTPUT,
  initializerInfo,
  int64Initializer,
  int64Values,
  node,
  opsets,
  readModel,
  readNode,
  tensorInfo,
  type OnnxNode,
  writeModel,
} from './onnx-model.js';
import { bytesField, sub, type Field } from './onnx-proto.js';

/*
 * Grouped-query attention as a torch export writes it repeats every KV head for the query heads that share it
 * (transformers' repeat_kv: Unsqueeze at axis 2, Expand by the group size, Reshape to the query's head count)
 * before the two attention matmuls. On the CPU that copy of the whole cache, twice per layer and step, costs as
 * much as the attention itself and grows with rows x context. The same products come out when each group of query
 * heads is laid next to its one KV head instead:
 *
 *   A [B, H, S, X] -> Reshape [B, kvH, g*S, X];  MatMul with the KV head [B, kvH, X, Y] (transposed if it was);
 *   [B, kvH, g*S, Y] -> Reshape [B, H, S, Y]
 *
 * since query head h = k*g + r reads KV head k, and rows r*S..r*S+S-1 of group k are exactly head h's rows.
 * Reshapes move no data. Only the pattern with constant shapes is matched (the group size and the head count must be
 * read, not guessed); anything else is left as exported.
 */

interface Repeat {
  /** the KV tensor before it was repeated, [B, kvH, L, D] */
  kv: string;
  /** read as [B, kvH, D, L] (the repeated tensor was transposed before the matmul) */
  transposed: boolean;
  heads: number;
  kvHeads: number;
  /** the nodes from the Unsqueeze to the matmul's operand */
  chain: Uint8Array[];
}

interface Nodes {
  producer: Map<string, { field: Field; node: OnnxNode }>;
  /** int64 constants by tensor name: initializers and Constant nodes */
  constants: Map<string, number[]>;
}

/**
 * The graph with each attention matmul that reads repeated KV heads rewritten to read each KV head once, and how
 * many were; with none, the graph unchanged and why.
 */
export function withSharedKvHeads(bytes: Uint8Array): { bytes: Uint8Array; count: number; reason?: string } {
  const model = readModel(bytes);
  const opset = opsets(model).get('') ?? 0;
  // Unsqueeze takes its axes as an input from opset 13; older graphs are not matched.
  if (opset < 13) return { bytes, count: 0, reason: `default-domain opset ${opset}: the rewrite needs 13 or newer` };
  const nodes = model.graph.filter((f) => f.n === GRAPH_NODE).map((f) => ({ field: f, node: readNode(f) }));
  const g: Nodes = { producer: new Map(nodes.flatMap((n) => n.node.outputs.map((o) => [o, n] as const))), constants: new Map() };
  for (const f of model.graph) {
    if (f.n !== GRAPH_INITIALIZER) continue;
    const values = int64Values(sub(f));
    if (values) g.constants.set(initializerInfo(f).name, values);
  }
  for (const { node: n } of nodes) {
    const value = n.opType === 'Constant' && !n.domain ? n.tensorAttributes.get('value') : undefined;
    const values = value && int64Values(value);
    if (values) g.constants.set(n.outputs[0]!, values);
  }

  const taken = new Set([
    ...g.producer.keys(),
    ...model.graph.filter((f) => f.n === GRAPH_INITIALIZER).map((f) => initializerInfo(f).name),
    ...model.graph.filter((f) => f.n === GRAPH_INPUT).map((f) => tensorInfo(f).name),
  ]);
  const fresh = (hint: string) => {
    let name = `shared_kv/${hint}`;
    for (let i = 1; taken.has(name); i++) name = `shared_kv/${hint}_${i}`;
    taken.add(name);
    return name;
  };
  const shapes = new Map<string, string>();
  const added: Uint8Array[] = [];
  const shape = (values: number[]) => {
    const key = values.join(',');
    if (!shapes.has(key)) {
      const name = fresh(`shape_${values.join('_').replaceAll('-', 'm')}`);
      added.push(bytesField(GRAPH_INITIALIZER, int64Initializer(name, values, [values.length])));
      shapes.set(key, name);
    }
    return shapes.get(key)!;
  };

  const dropped = new Set<Uint8Array>();
  const chains: Uint8Array[] = [];
  let count = 0;
  for (const { field, node: matmul } of nodes) {
    if (matmul.opType !== 'MatMul' || matmul.domain || matmul.inputs.length !== 2) continue;
    const repeat = repeatedKv(matmul.inputs[1]!, g);
    if (!repeat) continue;
    count++;
    const [a] = matmul.inputs as [string];
    const grouped = fresh('grouped');
    added.push(bytesField(GRAPH_NODE, node('Reshape', grouped, [a, shape([0, repeat.kvHeads, -1, 0])], [grouped])));
    let kv = repeat.kv;
    if (repeat.transposed) {
      const t = fresh('transposed');
      added.push(bytesField(GRAPH_NODE, node('Transpose', t, [kv], [t], { perm: [0, 1, 3, 2] })));
      kv = t;
    }
    const product = fresh('product');
    added.push(
      bytesField(GRAPH_NODE, node('MatMul', product, [grouped, kv], [product])),
      bytesField(GRAPH_NODE, node('Reshape', fresh('heads'), [product, shape([0, repeat.heads, -1, 0])], matmul.outputs)),
    );
    dropped.add(field.raw);
    chains.push(...repeat.chain);
  }
  if (count === 0) return { bytes, count, reason: 'no attention matmul reads KV heads repeated with constant shapes' };

  // The repeat chains are dropped once nothing kept reads them (a graph output or another reader keeps them), and
  // so are the shape constants only they read.
  const outputs = new Set(model.graph.filter((f) => f.n === GRAPH_OUTPUT).map((f) => tensorInfo(f).name));
  const byRaw = new Map(nodes.map((n) => [n.field.raw, n.node]));
  const unread = (names: readonly string[]) => {
    const read = new Set(nodes.filter((n) => !dropped.has(n.field.raw)).flatMap((n) => n.node.inputs));
    return names.every((o) => !read.has(o) && !outputs.has(o));
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const raw of chains) {
      if (dropped.has(raw) || !unread(byRaw.get(raw)!.outputs)) continue;
      dropped.add(raw);
      changed = true;
    }
  }
  const shapeInputs = new Set(chains.filter((raw) => dropped.has(raw)).flatMap((raw) => byRaw.get(raw)!.inputs.slice(1)));
  for (const f of model.graph) {
    const name = f.n === GRAPH_INITIALIZER ? initializerInfo(f).name : f.n === GRAPH_NODE && byRaw.get(f.raw)?.opType === 'Constant' ? byRaw.get(f.raw)!.outputs[0]! : undefined;
    if (name !== undefined && shapeInputs.has(name) && unread([name])) dropped.add(f.raw);
  }
  return { bytes: writeModel(model, [...model.graph.filter((f) => !dropped.has(f.raw)).map((f) => f.raw), ...added]), count };
}

/** How `operand` repeats a KV tensor's heads, when it is transformers' repeat_kv (then maybe transposed) with constant shapes. */
function repeatedKv(operand: string, g: Nodes): Repeat | undefined {
  const chain: Uint8Array[] = [];
  const made = (tensor: string, opType: string) => {
    const p = g.producer.get(tensor);
    if (!p || p.node.opType !== opType || p.node.domain) return undefined;
    chain.push(p.field.raw);
    return p.node;
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
  return { kv: unsqueeze.inputs[0]!, transposed: !!transpose, heads: to[1]!, kvHeads: to[1]! / group, chain };
}
