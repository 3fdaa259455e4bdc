import { GRAPH_INITIALIZER, GRAPH_INPUT, initializerInfo, int64Initializer, opsets, readNode, tensorInfo, GRAPH_NODE, type OnnxModel, type OnnxNode } from './onnx-model.js';
import { bytesField, concat, parseMessage, text, type Field } from './onnx-proto.js';

export interface GraphNode {
  field: Field;
  node: OnnxNode;
}

/**
 * What a load-time rewrite of a graph's attention needs (shared-kv-heads.ts, kv-delta.ts): its nodes in order, the
 * node that makes each tensor, names no tensor has yet, and int64 shape constants added as initializers.
 */
export class GraphEditor {
  /** the initializers added by int64() */
  readonly initializers: Uint8Array[] = [];
  private readonly constants = new Map<string, string>();

  private constructor(
    readonly nodes: GraphNode[],
    readonly producer: Map<string, GraphNode>,
    /** the nodes that read each tensor, in graph order, each once */
    readonly readers: Map<string, GraphNode[]>,
    private readonly taken: Set<string>,
    private readonly prefix: string,
  ) {}

  /**
   * The graph ready to edit, new names under `prefix/`; or why not: a default-domain opset below 13 (where Slice,
   * Unsqueeze and Squeeze took attributes, not inputs) or control-flow subgraphs (their bodies read tensors their
   * node does not list, so what a graph still reads could not be told).
   */
  static open(model: OnnxModel, prefix: string): GraphEditor | string {
    const opset = opsets(model).get('') ?? 0;
    if (opset < 13) return `default-domain opset ${opset}: the rewrite needs 13 or newer`;
    const nodes = model.graph.filter((f) => f.n === GRAPH_NODE).map((f) => ({ field: f, node: readNode(f) }));
    if (nodes.some((n) => n.node.hasSubgraphs)) return 'the graph has control-flow subgraphs';
    const producer = new Map(nodes.flatMap((n) => n.node.outputs.map((o) => [o, n] as const)));
    const readers = new Map<string, GraphNode[]>();
    for (const n of nodes) {
      for (const i of new Set(n.node.inputs)) {
        if (!readers.has(i)) readers.set(i, []);
        readers.get(i)!.push(n);
      }
    }
    const taken = new Set([
      ...producer.keys(),
      ...model.graph.filter((f) => f.n === GRAPH_INITIALIZER).map((f) => initializerInfo(f).name),
      ...model.graph.filter((f) => f.n === GRAPH_INPUT).map((f) => tensorInfo(f).name),
    ]);
    return new GraphEditor(nodes, producer, readers, taken, prefix);
  }

  /** A tensor name no tensor of the graph has. */
  fresh(hint: string): string {
    let name = `${this.prefix}/${hint}`;
    for (let i = 1; this.taken.has(name); i++) name = `${this.prefix}/${hint}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** An int64 [n] initializer holding `values`, one per distinct value list. */
  int64(values: readonly number[]): string {
    const key = values.join(',');
    if (!this.constants.has(key)) {
      const name = this.fresh(`int64_${values.join('_').replaceAll('-', 'm')}`);
      this.initializers.push(bytesField(GRAPH_INITIALIZER, int64Initializer(name, values, [values.length])));
      this.constants.set(key, name);
    }
    return this.constants.get(key)!;
  }
}

/** A node field with the tensors it reads and writes renamed as `names` says; everything else byte for byte. */
export function withTensorsRenamed(f: Field, names: ReadonlyMap<string, string>): Uint8Array {
  const fields = parseMessage(f.bytes);
  // NodeProto: input = 1, output = 2
  const renames = (x: Field) => (x.n === 1 || x.n === 2) && names.has(text(x));
  if (!fields.some(renames)) return f.raw;
  return bytesField(GRAPH_NODE, concat(fields.map((x) => (renames(x) ? bytesField(x.n, names.get(text(x))!) : x.raw))));
}

/**
 * The graph fields without the nodes nothing reads and the initializers only they read (what a rewrite left
 * behind): what the outputs need, found back through each tensor's producer, so node order does not matter.
 * Initializers that are also graph inputs stay (older exports list every initializer as an input). Not for graphs
 * with control-flow subgraphs, whose bodies read tensors their node does not list (GraphEditor.open refuses them).
 */
export function unreadDropped(graph: readonly Uint8Array[], outputs: ReadonlySet<string>): Uint8Array[] {
  const fields = graph.map((raw) => parseMessage(raw)[0]!);
  const producer = new Map<string, { field: Field; inputs: string[] }>();
  for (const f of fields) {
    if (f.n !== GRAPH_NODE) continue;
    const n = readNode(f);
    for (const o of n.outputs) producer.set(o, { field: f, inputs: n.inputs });
  }
  const inputs = new Set(fields.filter((f) => f.n === GRAPH_INPUT).map((f) => tensorInfo(f).name));
  const needed = new Set<string>();
  const kept = new Set<Field>();
  const pending = [...outputs];
  while (pending.length) {
    const tensor = pending.pop()!;
    if (needed.has(tensor)) continue;
    needed.add(tensor);
    const made = producer.get(tensor);
    if (!made || kept.has(made.field)) continue;
    kept.add(made.field);
    pending.push(...made.inputs);
  }
  const keep = (f: Field) => (f.n === GRAPH_NODE ? kept.has(f) : f.n !== GRAPH_INITIALIZER || needed.has(initializerInfo(f).name) || inputs.has(initializerInfo(f).name));
  return fields.filter(keep).map((f) => f.raw);
}
